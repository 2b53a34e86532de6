-- Argo CD health of a speculators.ai/SpeculatorTraining.
-- Written for argocd-cm (resource.customizations.health.speculators.ai_SpeculatorTraining): Lua 5.1 with
-- only the base and table libraries (no string/math unless useOpenLibs is set).
--
-- Progressing: no status yet, a generation the operator has not observed, any running phase
--              (Pending, Queued (Kueue holds a step back for quota), PreparingData, GeneratingHiddenStates,
--              Training, Evaluating, Publishing), or
--              Succeeded while the Speculator of spec.deploy is still starting (Ready=Unknown).
-- Healthy:     Ready=True (trained, and deployed when spec.deploy is set), also when the promotion gate
--              kept the draft from serving (Promoted=False): the training did its job; the message says why.
-- Degraded:    phase Failed, or Ready=False (a step failed, or the deployed Speculator failed).
-- Never Suspended: a training has no suspend or stop switch.
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

local phase = obj.status.phase
if phase == nil then
  phase = "Pending"
end
local ready = find(obj.status.conditions, "Ready")

if phase == "Failed" or (ready ~= nil and ready.status == "False") then
  hs.status = "Degraded"
  if ready ~= nil then
    hs.message = phase .. ": " .. explain(ready)
  else
    hs.message = phase
  end
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = phase .. ": waiting for the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. explain(ready)
  return hs
end

hs.status = "Progressing"
local progress = ""
if obj.status.progress ~= nil and obj.status.progress.percent ~= nil then
  progress = " (" .. obj.status.progress.percent .. "%)"
end
hs.message = phase .. progress .. ": " .. explain(ready)
return hs
