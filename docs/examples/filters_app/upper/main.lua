-- upper: a text.Filter@1 that upper-cases its text and counts the lines it saw in the host's store.
local polyplug_abi = require("polyplug_abi")
local contracts = require("generated.guest.contracts")
local host_contracts = require("generated.guest.host_contracts")

local to_str = polyplug_abi.to_str

local function new_upper(host_ptr)
  local store = assert(host_contracts.HostStoreContract.from_host(host_ptr), "no host.Store@1")
  local self = {}

  function self:apply(text)
    local seen = tonumber(to_str(assert(store:get("upper.lines")))) or 0
    assert(store:put("upper.lines", tostring(seen + 1)))
    return to_str(text):upper()
  end

  return self
end

contracts.set_upper_factory(new_upper)
return contracts
