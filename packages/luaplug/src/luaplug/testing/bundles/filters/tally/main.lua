-- text.Filter@1 "tally", through glue from `luaplug codegen --bundle bundle.toml --out generated`:
-- apply(text) -> "tally:<calls so far>", the count kept in host.Store@1 under "tally".
local polyplug_abi = require("polyplug_abi")
local contracts = require("generated.guest.contracts")
local host_contracts = require("generated.guest.host_contracts")

local function new_tally(host_ptr)
  local self = {}

  function self:apply(text)
    local store = assert(host_contracts.HostStoreContract.from_host(host_ptr, 0), "no host.Store@1")
    local n = assert(store:bump("tally"))
    return "tally:" .. tostring(tonumber(n)) .. ":" .. polyplug_abi.to_str(text)
  end

  return self
end

contracts.set_tally_factory(new_tally)
return contracts
