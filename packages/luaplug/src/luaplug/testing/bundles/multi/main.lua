-- Two contracts in one bundle (one VM). A's handler calls B through the HostApi.
--   iso.MultiA@1 fn 0 call_b() -> struct { int32 code; int32 value; int32 created; }
--       code: the AbiError code of the nested call of B fn 0, value: what B wrote
--       (-1 when B did not run), created: 1 when create_guest_instance gave a
--       non-null instance. Negative codes: -2 B not found, -3 B not resolvable.
--   iso.MultiB@1 fn 0 answer() -> int32 42
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

local B_ID = abi.guest_contract_id("iso.MultiB", 1)
local result_p = ffi.typeof("struct { int32_t code; int32_t value; int32_t created; } *")
local NULL_INDEX = 0xFFFFFFFF

local function call_b(self, _args, out)
  local r = ffi.cast(result_p, out)
  r.code, r.value, r.created = -1, -1, -1
  local host = guest.cast_host_interface(self.host)
  local handle = host.find_guest_contract(host, B_ID, 1)
  if handle.index == NULL_INDEX then r.code = -2 return end
  local iface = host.resolve_guest_contract(host, handle)
  if iface == nil then r.code = -3 return end
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  r.created = (inst[0].data ~= nil) and 1 or 0
  local slot = ffi.new("int32_t[1]", -1)
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, nil, slot, nil, err)
  r.code = err[0].code
  r.value = slot[0]
  host.destroy_guest_instance(host, iface, inst[0])
end

local function answer(_self, _args, out)
  ffi.cast("int32_t*", out)[0] = 42
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.MultiA"] = {
      contract_version = 1,
      plugin_name = "multi-a",
      factory = function(host) return { host = host } end,
      functions = { [0] = call_b },
    },
    ["iso.MultiB"] = {
      contract_version = 1,
      plugin_name = "multi-b",
      factory = function(_host) return {} end,
      functions = { [0] = answer },
    },
  }, { code = 0 }
end
