-- iso.Reenter@1: a handler that calls its own contract back through the HostApi.
--   fn 0 self_call() -> struct { int32 code; int32 value; int32 created; }
--       code: AbiError code of calling fn 1 of this very contract (default impl),
--       value: what fn 1 wrote (-1 when it did not run), created: 1 when
--       create_guest_instance of this contract gave a non-null instance
--   fn 1 ping() -> int32 7
--   fn 2 fail(): raises (the re-entrancy mark must be cleared on error exits too)
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

local SELF_ID = abi.guest_contract_id("iso.Reenter", 1)
local result_p = ffi.typeof("struct { int32_t code; int32_t value; int32_t created; } *")

local function self_call(self, _args, out)
  local r = ffi.cast(result_p, out)
  r.code, r.value, r.created = -1, -1, -1
  local host = guest.cast_host_interface(self.host)
  local handle = host.find_guest_contract(host, SELF_ID, 1)
  local iface = host.resolve_guest_contract(host, handle)
  if iface == nil then r.code = -3 return end
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  r.created = (inst[0].data ~= nil) and 1 or 0
  if inst[0].data ~= nil then host.destroy_guest_instance(host, iface, inst[0]) end
  local null_inst = ffi.new("GuestContractInstance")
  null_inst.contract_id = SELF_ID
  local slot = ffi.new("int32_t[1]", -1)
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, null_inst, 1, nil, slot, nil, err)
  r.code = err[0].code
  r.value = slot[0]
end

local function ping(_self, _args, out)
  ffi.cast("int32_t*", out)[0] = 7
end

local function fail()
  error("reenter fail")
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Reenter"] = {
      contract_version = 1,
      factory = function(host) return { host = host } end,
      functions = { [0] = self_call, [1] = ping, [2] = fail },
    },
  }, { code = 0 }
end
