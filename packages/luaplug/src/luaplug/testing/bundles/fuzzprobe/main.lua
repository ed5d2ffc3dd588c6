-- fuzz.Probe@1: handlers that never dereference args or out, so a fuzzer may pass any
-- address in them (integration/test_fuzz.py).
--   fn 0 noop()
--   fn 1 fail(): raises "probe failure"
--   fn 2 bump(): self.calls += 1 (instance state only, no pointers)
--   fn 3 alloc(size = args): arena_alloc(args, arena); when it returns memory, fills
--        it (proving it is writable) and hands host.alloc memory (arena 0) back to
--        host.free. Dereferences the arena: pass 0 or a live CallArena.
local ffi = require("ffi")

local host_t = ffi.typeof(
  "struct { void* rt; void* reg; uint8_t* (*alloc)(void*, size_t, size_t); void (*free)(void*, void*, size_t, size_t); } *")
local u8p = ffi.typeof("uint8_t*")

local function noop() end

local function fail()
  error("probe failure")
end

local function bump(self)
  self.calls = self.calls + 1
end

local function alloc(self, size, _out, arena, arena_alloc)
  local p = arena_alloc(size, arena)
  if type(p) ~= "number" then error("arena_alloc returned a " .. type(p)) end
  if p ~= 0 then
    ffi.fill(ffi.cast(u8p, p), size, 0xA5)
    if arena == 0 then
      local h = ffi.cast(host_t, self.host)
      h.free(h, ffi.cast(u8p, p), size, 1)
    end
  end
end

function polyplug_init(_host, _ctx)
  return {
    ["fuzz.Probe"] = {
      contract_version = 1,
      plugin_name = "fuzz-probe",
      factory = function(host) return { calls = 0, host = host } end,
      functions = { [0] = noop, [1] = fail, [2] = bump, [3] = alloc },
    },
  }, { code = 0 }
end
