-- Does not compile.
function polyplug_init(_host, _ctx)
  return {, { code = 0 }
end
