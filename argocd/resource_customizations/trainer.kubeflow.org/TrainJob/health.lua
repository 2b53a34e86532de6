-- Argo CD health of a Kubeflow Trainer v2 (>= 2.2) trainer.kubeflow.org/TrainJob; Argo CD ships none.
-- Written for argocd-cm (resource.customizations.health.trainer.kubeflow.org_TrainJob): Lua 5.1 without
-- the string library. Trainer reports Complete and Failed (reason and message from its JobSet) and
-- Suspended (Kueue holds a TrainJob suspended until it admits it); no Running condition: jobsStatus says.
local hs = {}

local function find(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype and c.status == "True" then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  local text = fallback
  if c.reason ~= nil and c.reason ~= "" then
    text = c.reason
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status or {}
local failed = find(status.conditions, "Failed")
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = explain(failed, "Failed")
  return hs
end
local complete = find(status.conditions, "Complete")
if complete ~= nil then
  hs.status = "Healthy"
  hs.message = explain(complete, "Complete")
  return hs
end
local suspended = find(status.conditions, "Suspended")
if suspended ~= nil or (obj.spec ~= nil and obj.spec.suspend == true) then
  hs.status = "Suspended"
  if suspended ~= nil then
    hs.message = explain(suspended, "Suspended")
  else
    hs.message = "Suspended (waiting for admission)"
  end
  return hs
end
local active, ready, succeeded = 0, 0, 0
for _, job in ipairs(status.jobsStatus or {}) do
  active = active + (job.active or 0)
  ready = ready + (job.ready or 0)
  succeeded = succeeded + (job.succeeded or 0)
end
hs.status = "Progressing"
if active == 0 and succeeded == 0 then
  hs.message = "Waiting for Trainer to start the JobSet"
else
  hs.message = "Running: " .. active .. " active, " .. ready .. " ready, " .. succeeded .. " succeeded pods"
end
return hs
