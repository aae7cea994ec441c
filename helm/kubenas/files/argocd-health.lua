-- Argo CD health check for kubenas.io/Experiment
-- (argocd-cm key resource.customizations.health.kubenas.io_Experiment; see docs/gitops.md).
--
--   Progressing  the search runs or is suspended (message: finished/maxTrials, trials waiting
--                for their queue, the best so far), the operator has not acted on the latest spec
--                yet, or no status at all
--   Healthy      Succeeded, or Stopped by hand
--   Degraded     Failed: TooManyFailures, NoSuccessfulTrial, InvalidSpec (the message says why)
--
-- Plain Lua 5.1, as Argo CD runs it.
local hs = {}
local status = obj.status

local function condition(kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function best()
  if status.bestValue == nil then
    return "no result yet"
  end
  local text = "best " .. string.format("%.4g", status.bestValue)
  if status.bestTrial ~= nil and status.bestTrial.name ~= nil then
    text = text .. " (" .. status.bestTrial.name .. ")"
  end
  return text
end

local function progress()
  local text = (status.progress or "0/?") .. " trials finished, "
  if status.trials ~= nil and status.trials.queued ~= nil and status.trials.queued > 0 then
    text = text .. string.format("%d", status.trials.queued) .. " queued, "
  end
  return text .. best()
end

local function outcome()
  local text = status.reason or status.phase
  if status.message ~= nil and status.message ~= "" then
    text = text .. ": " .. status.message
  end
  return text
end

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. string.format("%d", generation)
  return hs
end

if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = outcome() .. "; " .. best()
elseif status.phase == "Stopped" then
  hs.status = "Healthy"
  hs.message = outcome() .. "; " .. best()
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = outcome()
else
  hs.status = "Progressing"
  local suspended = condition("Suspended")
  if suspended ~= nil and suspended.status == "True" then
    hs.message = "Suspended (spec.suspend): " .. progress()
  else
    hs.message = "Running: " .. progress()
  end
  local synced = condition("Synced")
  if synced ~= nil and synced.status == "False" then
    hs.message = hs.message .. "; the operator retries: " .. (synced.message or synced.reason or "")
  end
end
return hs
