-- iso.Counter@1: every instance keeps its own count (plain ffi, no SDK).
--   fn 0 inc(): count += STEP, writes the new count to an int64 out slot
--   fn 1 get(): writes the count to an int64 out slot
--   fn 2 noop()
local ffi = require("ffi")

local STEP = 1

local i64p = ffi.typeof("int64_t*")

local function inc(self, _args, out)
  self.count = self.count + STEP
  if out ~= 0 then ffi.cast(i64p, out)[0] = self.count end
end

local function get(self, _args, out)
  ffi.cast(i64p, out)[0] = self.count
end

local function noop() end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Counter"] = {
      contract_version = 1,
      plugin_name = "counter-plugin",
      factory = function(_host) return { count = 0 } end,
      functions = { [0] = inc, [1] = get, [2] = noop },
    },
  }, { code = 0 }
end
