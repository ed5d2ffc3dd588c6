-- iso.Consumer@1 fn 0 relay(StringView s) -> StringView "echo: " .. echo(s)
-- Calls iso.Echo@1 (another bundle) through the HostApi with a nil arena, reads the
-- string echo returned from host.alloc memory, frees it, and returns a copy.
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

local ECHO_ID = abi.guest_contract_id("iso.Echo", 1)

local function relay(self, args, out, arena, arena_alloc)
  local host = guest.cast_host_interface(self.host)
  local handle = host.find_guest_contract(host, ECHO_ID, 1)
  if handle.index == 0xFFFFFFFF then error("echo not found") end
  local iface = host.resolve_guest_contract(host, handle)
  if iface == nil then error("echo is stale") end
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local res = ffi.new("StringView[1]")
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, ffi.cast("const void*", args), res, nil, err)
  host.destroy_guest_instance(host, iface, inst[0])
  if err[0].code ~= 0 then error("echo call failed with code " .. tonumber(err[0].code)) end
  local text = ffi.string(res[0].ptr, res[0].len)
  if res[0].ptr ~= nil then
    host.free(host, ffi.cast("uint8_t*", res[0].ptr), res[0].len, 1)
  end
  ffi.cast("StringView*", out)[0] = guest.alloc_string_arena(arena_alloc, arena, "echo: " .. text)
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Consumer"] = {
      contract_version = 1,
      plugin_name = "consumer-plugin",
      factory = function(host) return { host = host } end,
      functions = { [0] = relay },
    },
  }, { code = 0 }
end
