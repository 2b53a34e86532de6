-- Argo CD health of a speculators.ai/SpeculatorBenchmark.
-- Written for argocd-cm (resource.customizations.health.speculators.ai_SpeculatorBenchmark): Lua 5.1 with
-- only the base and table libraries (no string/math unless useOpenLibs is set).
--
-- A benchmark is a run that ends:
-- Progressing: no status yet, or a running phase (Pending, WaitingForSpeculator, StartingBaseline,
--              Running).
-- Healthy:     Succeeded (the message carries the speed-up and the breakeven rate).
-- Degraded:    Failed (the baseline did not come up, GuideLLM failed, or the spec could not be rendered).
-- Never Suspended: a run has no stop switch (delete it).
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
  if c == nil then
    return ""
  end
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

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local phase = obj.status.phase
local ready = find(obj.status.conditions, "Ready")
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. explain(ready)
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. explain(ready)
  return hs
end
hs.status = "Progressing"
hs.message = phase .. ": " .. explain(ready)
return hs
