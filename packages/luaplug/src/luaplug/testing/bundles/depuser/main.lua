-- svc.DepUser@1, declaring a dependency on iso.Echo@1 only:
--   0 seen_at_init() -> u32  bit 0: iso.Echo@1 was found during init; bit 1: iso.Counter@1 was
--   1 seen_now() -> u32      the same bits, looked up now (outside init nothing is restricted)
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")

local ECHO_ID = abi.guest_contract_id("iso.Echo", 1)
local COUNTER_ID = abi.guest_contract_id("iso.Counter", 1)

local function seen(host_ptr)
  local host = guest.cast_host_interface(host_ptr)
  local bits = 0
  if host.find_guest_contract(host, ECHO_ID, 1).index ~= 0xFFFFFFFF then bits = bits + 1 end
  if host.find_guest_contract(host, COUNTER_ID, 1).index ~= 0xFFFFFFFF then bits = bits + 2 end
  return bits
end

local at_init = 0

function polyplug_init(host_ptr, _ctx)
  at_init = seen(host_ptr)
  return {
    ["svc.DepUser"] = {
      contract_version = 1,
      plugin_name = "depuser-plugin",
      factory = function(h) return { host = h } end,
      functions = {
        [0] = function(_self, _args, out) ffi.cast("uint32_t*", out)[0] = at_init end,
        [1] = function(self, _args, out) ffi.cast("uint32_t*", out)[0] = seen(self.host) end,
      },
    },
  }, { code = 0 }
end
