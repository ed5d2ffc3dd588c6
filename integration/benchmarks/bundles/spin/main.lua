-- bench.Spin@1: a call that does a fixed amount of work inside Lua (integration/benchmarks, threads).
--   fn 0 spin(struct { int32_t n; }) -> int64: n rounds of integer arithmetic, the last value
local ffi = require("ffi")

local args_p = ffi.typeof("struct { int32_t n; } *")
local i64p = ffi.typeof("int64_t*")

local function spin(_self, args, out)
  local n = ffi.cast(args_p, args).n
  local x = 0
  for i = 1, n do
    x = (x * 33 + i) % 1000003
  end
  if out ~= 0 then ffi.cast(i64p, out)[0] = x end
end

function polyplug_init(_host, _ctx)
  return {
    ["bench.Spin"] = {
      contract_version = 1,
      plugin_name = "spin-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = spin },
    },
  }, { code = 0 }
end
