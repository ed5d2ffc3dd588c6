-- Registers the host contract guest.Clock@1 (native dispatch, Lua callbacks) during init:
--   guest.Clock fn 0 now() -> u32 = TICK
-- svc.HostReg@1 fn 0 read() -> u32: get_host_contract(guest.Clock) + now(); 1000 when it gave no instance.
-- FAIL_AFTER_REGISTER makes init fail once the contract is registered (transactional loads).
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")

local TICK = 42
local FAIL_AFTER_REGISTER = false
local CLOCK_ID = abi.host_contract_id("guest.Clock", 1)

if not pcall(ffi.typeof, "HostRegFn") then
  ffi.cdef([[
typedef void (*HostRegFn)(void*, const void*, void*, AbiError*);
]])
end

-- Everything C holds on to lives as long as this VM.
local keep = {}

local function build_interface()
  local iface = ffi.new("HostContractInterface")
  iface.contract_id = CLOCK_ID
  iface.contract_version.major = 1
  iface.contract_version.minor = 3
  iface.singleton = true
  iface.dispatch_type = 0
  local create = ffi.cast("void(*)(const HostContractInterface*, const void*, HostContractInstance*)",
    function(_this, _args, out) out.data = ffi.cast("void*", 7) end)
  -- LuaJIT callbacks take no struct by value: the one-pointer HostContractInstance is a void*.
  local destroy = ffi.cast("void(*)(const HostContractInterface*, void*)", function() end)
  local now = ffi.cast("HostRegFn", function(_inst, _args, out, err)
    if out ~= nil then ffi.cast("uint32_t*", out)[0] = TICK end
    err.code = 0
  end)
  local fns = ffi.new("HostRegFn[1]", { now })
  iface.create_instance = create
  iface.destroy_instance = ffi.cast("void(*)(const HostContractInterface*, HostContractInstance)", destroy)
  iface.dispatch.native.function_count = 1
  iface.dispatch.native.functions = ffi.cast("void* const*", fns)
  keep[#keep + 1] = { iface, create, destroy, now, fns }
  return iface
end

local function read(self, _args, out)
  local host = guest.cast_host_interface(self.host)
  local inst = host.get_host_contract(host, CLOCK_ID, 0)
  if inst.data == nil then
    ffi.cast("uint32_t*", out)[0] = 1000
    return
  end
  local iface = host.resolve_host_contract_interface(host, CLOCK_ID, 0)
  local err = ffi.new("AbiError[1]")
  ffi.cast("HostRegFn", iface.dispatch.native.functions[0])(inst.data, nil, ffi.cast("void*", out), err)
end

function polyplug_init(host_ptr, _ctx)
  local host = guest.cast_host_interface(host_ptr)
  local err = ffi.new("AbiError[1]")
  host.register_host_contract(host, build_interface(), err)
  if err[0].code ~= 0 then
    return {}, { code = err[0].code, message = "register_host_contract failed with code " .. err[0].code }
  end
  if FAIL_AFTER_REGISTER then
    return {}, { code = 1, message = "failing after register_host_contract" }
  end
  return {
    ["svc.HostReg"] = {
      contract_version = 1,
      plugin_name = "hostreg-plugin",
      factory = function(h) return { host = h } end,
      functions = { [0] = read },
    },
  }, { code = 0 }
end
