-- iso.Gate@1: a handler that holds the VM until the host releases it.
--   fn 0 hold(struct { int32_t entered; int32_t release; }): sets entered = 1, spins
--        until release ~= 0, then writes its position in the completion order (int32)
--   fn 1 mark(): writes its position in the completion order (int32)
local ffi = require("ffi")
local jit = require("jit")

local gate_p = ffi.typeof("struct { volatile int32_t entered; volatile int32_t release; } *")
local order = 0

local function hold(_self, args, out)
  local g = ffi.cast(gate_p, args)
  g.entered = 1
  while g.release == 0 do end
  order = order + 1
  if out ~= 0 then ffi.cast("int32_t*", out)[0] = order end
end
-- Keep the spin loop interpreted: every iteration reads the flag from memory.
jit.off(hold, true)

local function mark(_self, _args, out)
  order = order + 1
  if out ~= 0 then ffi.cast("int32_t*", out)[0] = order end
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Gate"] = {
      contract_version = 1,
      factory = function(_host) return {} end,
      functions = { [0] = hold, [1] = mark },
    },
  }, { code = 0 }
end
