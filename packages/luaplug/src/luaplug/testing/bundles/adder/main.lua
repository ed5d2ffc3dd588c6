-- iso.Adder@1 (no plugin_name, no contract_version: the loader's defaults apply).
--   fn 0 add(struct { int32_t a; int32_t b; }) -> int32
--   fn 1 noop()
--   fn 2 probe() -> int32 flags describing the handler's arguments
local ffi = require("ffi")

local args_p = ffi.typeof("struct { int32_t a; int32_t b; } *")
local i32p = ffi.typeof("int32_t*")

local function add(_self, args, out)
  local a = ffi.cast(args_p, args)
  if out ~= 0 then ffi.cast(i32p, out)[0] = a.a + a.b end
end

local function noop() end

-- bit 0: args is a number, 1: out is a number, 2: arena is a number,
-- 3: arena_alloc is a function, 4: a null args pointer arrives as 0, 5: a null arena as 0
local function probe(_self, args, out, arena, arena_alloc)
  local flags = 0
  if type(args) == "number" then flags = flags + 1 end
  if type(out) == "number" then flags = flags + 2 end
  if type(arena) == "number" then flags = flags + 4 end
  if type(arena_alloc) == "function" then flags = flags + 8 end
  if args == 0 then flags = flags + 16 end
  if arena == 0 then flags = flags + 32 end
  ffi.cast(i32p, out)[0] = flags
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Adder"] = {
      factory = function(_host) return {} end,
      functions = { [0] = add, [1] = noop, [2] = probe },
    },
  }, { code = 0 }
end
