-- bench.SdkGreeter@1: the greeter's greet written with the guest SDK, in the shape
-- generated glue has (a StringView read with abi.to_str, the reply copied with
-- guest.alloc_string_arena into the caller's out slot).
--   fn 0 greet(StringView name) -> StringView "hello, <name>"
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")

local function greet(_self, args, out, arena, arena_alloc)
  local name = ffi.cast("const StringView*", ffi.cast("uintptr_t", args))
  local reply = "hello, " .. abi.to_str(name[0])
  local slot = ffi.cast("StringView*", ffi.cast("uintptr_t", out))
  slot[0] = guest.alloc_string_arena(arena_alloc, arena, reply)
end

function polyplug_init(_host, _ctx)
  return {
    ["bench.SdkGreeter"] = {
      contract_version = 1,
      plugin_name = "sdkgreet-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = greet },
    },
  }, { code = guest.AbiErrorCode.Ok }
end
