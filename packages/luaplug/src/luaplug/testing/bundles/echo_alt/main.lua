-- iso.Echo@1 fn 0 echo(StringView s) -> StringView "alt:" .. s: the same contract as the
-- echo bundle, from another bundle.
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

local function echo(_self, args, out, arena, arena_alloc)
  local s = abi.to_str(ffi.cast("const StringView*", args))
  ffi.cast("StringView*", out)[0] = guest.alloc_string_arena(arena_alloc, arena, "alt:" .. s)
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Echo"] = {
      contract_version = 1,
      plugin_name = "echo-alt-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = echo },
    },
  }, { code = 0 }
end
