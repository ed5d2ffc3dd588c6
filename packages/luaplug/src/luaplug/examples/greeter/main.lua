-- A greeter: greet(StringView name) -> StringView, the result bumped from the call arena.
local ffi = require("ffi")
local sv_t = ffi.typeof("struct { const uint8_t* ptr; size_t len; } *")

local function greet(_self, args, out, arena, arena_alloc)
  local name = ffi.cast(sv_t, args)
  local text = "hello, " .. ffi.string(name.ptr, name.len)
  local p = arena_alloc(#text, arena)
  if p == 0 then error("arena_alloc failed") end
  ffi.copy(ffi.cast("uint8_t*", p), text, #text)
  local res = ffi.cast(sv_t, out)
  res.ptr = ffi.cast("const uint8_t*", p)
  res.len = #text
end

function polyplug_init(_host, _ctx)
  return {
    ["demo.Greeter"] = {
      plugin_name = "demo-greeter",
      factory = function(_host) return {} end,
      functions = { [0] = greet },
    },
  }, { code = 0 }
end
