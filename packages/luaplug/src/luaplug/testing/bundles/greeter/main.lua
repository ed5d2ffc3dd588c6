-- iso.Greeter@1: strings in, strings out through the call arena (plain ffi, no SDK).
--   fn 0 greet(StringView name) -> StringView "hello, <name>"
--   fn 1 rep(struct { StringView s; uint32_t n; }) -> StringView s repeated n times
local ffi = require("ffi")

local sv_t = ffi.typeof("struct { const uint8_t* ptr; size_t len; }")
local sv_p = ffi.typeof("$ *", sv_t)
local rep_args_p = ffi.typeof("struct { $ s; uint32_t n; } *", sv_t)
local u8p = ffi.typeof("uint8_t*")
local cu8p = ffi.typeof("const uint8_t*")

-- Copy `text` into memory from arena_alloc and write its StringView to `out`.
local function put(text, out, arena, arena_alloc)
  local n = #text
  local p = arena_alloc(n, arena)
  if type(p) ~= "number" then error("arena_alloc returned a " .. type(p) .. ", expected a number") end
  if p == 0 then error("arena_alloc returned 0 for " .. n .. " bytes") end
  ffi.copy(ffi.cast(u8p, p), text, n)
  local res = ffi.cast(sv_p, out)
  res.ptr = ffi.cast(cu8p, p)
  res.len = n
end

local function greet(_self, args, out, arena, arena_alloc)
  local name = ffi.cast(sv_p, args)
  put("hello, " .. ffi.string(name.ptr, name.len), out, arena, arena_alloc)
end

local function rep(_self, args, out, arena, arena_alloc)
  local a = ffi.cast(rep_args_p, args)
  put(string.rep(ffi.string(a.s.ptr, a.s.len), a.n), out, arena, arena_alloc)
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Greeter"] = {
      contract_version = 1,
      plugin_name = "greeter-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = greet, [1] = rep },
    },
  }, { code = 0 }
end
