-- Glue laid out as polyplugc 0.1.3 writes it for a Lua guest: the author sets a factory at
-- import time, polyplug_init returns (registrations, AbiError), each handler reads its
-- StringView arguments, calls the instance's method with the StringView cdata (not Lua
-- strings) and copies the Lua string it returns into the call arena.
--   iso.SdkText@1, every function (StringView text, StringView arg) -> StringView:
--   0 starts_with  1 ends_with  2 strip_prefix  3 split  4 split_default  5 to_str_guard
--   6 copy_via_host  7 log  8 guest_id
local ffi = require("ffi")
local polyplug_guest = require("polyplug_guest")

local M = {}

local METHODS = {
  [0] = "starts_with", "ends_with", "strip_prefix", "split", "split_default",
  "to_str_guard", "copy_via_host", "log", "guest_id",
}

local text_factory = nil

function M.set_text_factory(factory)
  text_factory = factory
end

local function handler(method)
  return function(instance, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local impl = instance and instance[method]
    if impl == nil then error("sdktext: no implementation for " .. method) end
    local args = ffi.cast("const StringView*", ffi.cast("uintptr_t", args_ptr))
    local result = impl(instance, args[0], args[1])
    if out_ptr ~= 0 then
      if result == nil then error("sdktext: " .. method .. " returned nil") end
      local out = ffi.cast("StringView*", ffi.cast("uintptr_t", out_ptr))
      out[0] = polyplug_guest.alloc_string_arena(arena_alloc, arena_ptr, result)
    end
  end
end

function polyplug_init(host_ptr, ctx_ptr)
  if host_ptr == nil or ctx_ptr == nil then
    return {}, { code = polyplug_guest.AbiErrorCode.Generic, message = "null host or context" }
  end
  if text_factory == nil then
    return {}, { code = polyplug_guest.AbiErrorCode.Generic, message = "set_text_factory was not called" }
  end
  local functions = {}
  for id = 0, #METHODS do functions[id] = handler(METHODS[id]) end
  return {
    ["iso.SdkText"] = {
      contract_version = 1,
      plugin_name = "sdktext",
      factory = text_factory,
      functions = functions,
    },
  }, { code = polyplug_guest.AbiErrorCode.Ok }
end

return M
