-- redact: a text.Filter@1 that masks the words the host lists (space-separated) under
-- "redact.words" in its store, and counts what it masked under "redact.masked".
local polyplug_abi = require("polyplug_abi")
local contracts = require("generated.guest.contracts")
local host_contracts = require("generated.guest.host_contracts")

local to_str = polyplug_abi.to_str
local MASK = "***"

local function new_redact(host_ptr)
  local store = assert(host_contracts.HostStoreContract.from_host(host_ptr), "no host.Store@1")
  local self = {}

  function self:apply(text)
    local s = to_str(text)
    local masked = tonumber(to_str(assert(store:get("redact.masked")))) or 0
    for word in to_str(assert(store:get("redact.words"))):gmatch("%S+") do
      local n
      s, n = s:gsub(word:gsub("%p", "%%%0"), MASK) -- the word taken literally, not as a pattern
      masked = masked + n
    end
    assert(store:put("redact.masked", tostring(masked)))
    return s
  end

  return self
end

contracts.set_redact_factory(new_redact)
return contracts
