-- svc.HostUser@1 calls the host contract host.Math@1 (api.toml) with native dispatch, the
-- polyplug-abi 0.1.3 way: the instance returned by value by get_host_contract (null data when
-- there is none, the reason in get_last_error), then
-- iface.dispatch.native.functions[fn_id](instance, args, out, AbiError*).
--   0 probe(u32 min_version) -> u32   1 when get_host_contract returned an instance, else 0
--   1 add(i32 a, i32 b) -> i32        host add (raises on a non-zero code)
--   2 greet(StringView) -> StringView "guest got: " .. host greet (host.alloc memory freed here)
--   3 boom() -> u32                   the code of host boom (it raises in Python)
--   4 same_instance() -> u32          1 when two get_host_contract calls return the same instance
--   5 resolve(u32 min_version) -> u32 function_count of the resolved interface, 0 when NULL
--   6 why(u32 min_version) -> StringView  get_last_error after get_host_contract ("" when none)
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

if not pcall(ffi.typeof, "HostUserNative") then
  ffi.cdef([[
typedef void (*HostUserFn)(HostContractInstance, const void*, void*, AbiError*);
typedef struct HostUserAddArgs { int32_t a; int32_t b; } HostUserAddArgs;
]])
end

local MATH_ID = abi.host_contract_id("host.Math", 1)

local function host_of(self)
  return guest.cast_host_interface(self.host)
end

local function instance(host, min_version)
  return host.get_host_contract(host, MATH_ID, min_version)
end

local function last_error(host)
  local n = tonumber(host.get_error_len(host))
  if n == 0 then return "" end
  local buf = ffi.new("uint8_t[?]", n)
  return ffi.string(buf, host.get_last_error(host, buf, n))
end

local function call(self, fn_id, args, out)
  local host = host_of(self)
  local inst = instance(host, 0)
  if inst.data == nil then error("get_host_contract gave no instance: " .. last_error(host)) end
  local iface = host.resolve_host_contract_interface(host, MATH_ID, 0)
  if iface == nil then error("host.Math@1 did not resolve") end
  local err = ffi.new("AbiError[1]")
  ffi.cast("HostUserFn", iface.dispatch.native.functions[fn_id])(inst, args, out, err)
  return tonumber(err[0].code)
end

local functions = {
  [0] = function(self, args, out)
    local inst = instance(host_of(self), ffi.cast("const uint32_t*", args)[0])
    ffi.cast("uint32_t*", out)[0] = (inst.data == nil) and 0 or 1
  end,
  [1] = function(self, args, out)
    local code = call(self, 0, ffi.cast("const void*", args), ffi.cast("void*", out))
    if code ~= 0 then error("host add failed with code " .. code) end
  end,
  [2] = function(self, args, out, arena, arena_alloc)
    local res = ffi.new("StringView[1]")
    local code = call(self, 1, ffi.cast("const void*", args), res)
    if code ~= 0 then error("host greet failed with code " .. code) end
    local text = ffi.string(res[0].ptr, res[0].len)
    if res[0].ptr ~= nil then
      local host = host_of(self)
      host.free(host, ffi.cast("uint8_t*", res[0].ptr), res[0].len, 1)
    end
    ffi.cast("StringView*", out)[0] = guest.alloc_string_arena(arena_alloc, arena, "guest got: " .. text)
  end,
  [3] = function(self, _args, out)
    local res = ffi.new("int32_t[1]")
    ffi.cast("uint32_t*", out)[0] = call(self, 2, nil, res)
  end,
  [4] = function(self, _args, out)
    local host = host_of(self)
    local a = instance(host, 0)
    local b = instance(host, 0)
    ffi.cast("uint32_t*", out)[0] = (a.data == b.data) and 1 or 0
  end,
  [5] = function(self, args, out)
    local host = host_of(self)
    local iface = host.resolve_host_contract_interface(host, MATH_ID, ffi.cast("const uint32_t*", args)[0])
    ffi.cast("uint32_t*", out)[0] = (iface == nil) and 0 or iface.dispatch.native.function_count
  end,
  [6] = function(self, args, out, arena, arena_alloc)
    local host = host_of(self)
    instance(host, ffi.cast("const uint32_t*", args)[0])
    ffi.cast("StringView*", out)[0] = guest.alloc_string_arena(arena_alloc, arena, last_error(host))
  end,
}

function polyplug_init(_host, _ctx)
  return {
    ["svc.HostUser"] = {
      contract_version = 1,
      plugin_name = "hostuser-plugin",
      factory = function(host) return { host = host } end,
      functions = functions,
    },
  }, { code = 0 }
end
