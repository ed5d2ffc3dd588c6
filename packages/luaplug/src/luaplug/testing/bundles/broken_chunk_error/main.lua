-- Compiles, but raises while the chunk runs.
local function setup()
  error("chunk exploded")
end

setup()

function polyplug_init(_host, _ctx)
  return {}, { code = 0 }
end
