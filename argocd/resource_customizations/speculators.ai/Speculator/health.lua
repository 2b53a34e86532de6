-- Argo CD health of a speculators.ai/Speculator.
-- Written for argocd-cm (resource.customizations.health.speculators.ai_Speculator): Lua 5.1 with only the
-- base and table libraries (no string/math unless useOpenLibs is set), so no string methods are used.
--
-- Progressing: no status yet, a generation the operator has not observed, Ready=Unknown (resolving the
--              draft, waiting for a training, pods starting).
-- Healthy:     Ready=True (the message adds a running canary of a retrained draft, or a drift).
-- Suspended:   Ready=True with spec.replicas 0 (scaled to zero on purpose).
-- Degraded:    Ready=False (failed training or draft, crash loops, missing KServe) or phase Failed.
local hs = {}

local function find(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function explain(c)
  local text = ""
  if c.reason ~= nil then
    text = c.reason
  end
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. c.message
  end
  return text
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = find(obj.status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

if ready.status == "False" or obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(ready)
  return hs
end

if ready.status == "True" then
  if obj.spec ~= nil and obj.spec.replicas == 0 then
    hs.status = "Suspended"
    hs.message = "Scaled to zero (spec.replicas is 0)"
    return hs
  end
  hs.status = "Healthy"
  hs.message = explain(ready)
  -- The closed loop (spec.retrain) never gates health: it is shown, not judged.
  local canary = find(obj.status.conditions, "CanaryPromoted")
  local drifted = find(obj.status.conditions, "Drifted")
  if canary ~= nil and canary.status == "Unknown" then
    hs.message = hs.message .. "; canary " .. explain(canary)
  elseif drifted ~= nil and drifted.status == "True" then
    hs.message = hs.message .. "; drifted " .. explain(drifted)
  end
  return hs
end

hs.status = "Progressing"
local phase = obj.status.phase
if phase == nil then
  phase = "Pending"
end
hs.message = phase .. ": " .. explain(ready)
return hs
