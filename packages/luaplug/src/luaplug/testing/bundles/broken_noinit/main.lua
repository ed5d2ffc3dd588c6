-- Defines no polyplug_init (only a local one, which the loader must not find).
local function polyplug_init()
  return {}, { code = 0 }
end
return polyplug_init
