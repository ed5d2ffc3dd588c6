-- A counter: every instance keeps its own count; inc writes it to an int64 out slot.
local ffi = require("ffi")

local function inc(self, _args, out)
  self.count = self.count + 1
  if out ~= 0 then ffi.cast("int64_t*", out)[0] = self.count end
end

function polyplug_init(_host, _ctx)
  return {
    ["demo.Counter"] = {
      contract_version = 1,
      plugin_name = "demo-counter",
      factory = function(_host) return { count = 0 } end,
      functions = { [0] = inc },
    },
  }, { code = 0 }
end
