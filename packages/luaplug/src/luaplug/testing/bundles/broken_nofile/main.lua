-- Never loaded: the manifest names no entry file.
function polyplug_init(_host, _ctx)
  error("must not run")
end
