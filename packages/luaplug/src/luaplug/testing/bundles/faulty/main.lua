-- iso.Faulty@1: handlers that raise.
--   fn 0 boom(): raises "boom from faulty"
--   fn 1 ok(): writes 1 to an int32 out slot
--   fn 2 raise_table(): raises a non-string error value
local ffi = require("ffi")

local function explode()
  error("boom from faulty")
end

local function boom()
  explode()
end

local function ok(_self, _args, out)
  ffi.cast("int32_t*", out)[0] = 1
end

local function raise_table()
  error({ reason = "a table" })
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.Faulty"] = {
      plugin_name = "faulty-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = boom, [1] = ok, [2] = raise_table },
    },
  }, { code = 0 }
end
