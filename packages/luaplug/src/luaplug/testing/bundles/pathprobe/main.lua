-- iso.PathProbe@1: reports what the loader set up for the bundle.
--   fn 0 -> StringView package.path
--   fn 1 -> int32 flags: bit 0 _G.PWNED is nil, bit 1 probe_helper (bundle dir) loaded
--   fn 2 -> StringView the bundle path BundleInitContext carried
--   fn 3 -> uint64 the bundle id BundleInitContext carried
--   fn 4 -> uint64 the host pointer polyplug_init received
--   fn 5 -> StringView package.cpath
-- probe_helper is optional: ";" separates package.path templates, so a bundle dir whose
-- name holds ";" cannot serve modules, and in-memory bundles have no dir at all.
local ffi = require("ffi")
local has_helper, helper = pcall(require, "probe_helper")

local sv_p = ffi.typeof("struct { const uint8_t* ptr; size_t len; } *")
local ctx_p = ffi.typeof("struct { uint64_t bundle_id; struct { const uint8_t* ptr; size_t len; } bundle_path; } *")

local init_path, init_id, init_host = nil, nil, nil

local function put(text, out, arena, arena_alloc)
  local p = arena_alloc(#text, arena)
  if p == 0 then error("arena_alloc failed") end
  ffi.copy(ffi.cast("uint8_t*", p), text, #text)
  local res = ffi.cast(sv_p, out)
  res.ptr = ffi.cast("const uint8_t*", p)
  res.len = #text
end

local function path(_self, _args, out, arena, arena_alloc)
  put(package.path, out, arena, arena_alloc)
end

local function flags(_self, _args, out)
  local f = 0
  if rawget(_G, "PWNED") == nil then f = f + 1 end
  if has_helper and helper.value == 1234 then f = f + 2 end
  ffi.cast("int32_t*", out)[0] = f
end

local function bundle_path(_self, _args, out, arena, arena_alloc)
  put(init_path, out, arena, arena_alloc)
end

local function bundle_id(_self, _args, out)
  ffi.cast("uint64_t*", out)[0] = init_id
end

local function host_ptr(_self, _args, out)
  ffi.cast("uint64_t*", out)[0] = init_host
end

local function cpath(_self, _args, out, arena, arena_alloc)
  put(package.cpath, out, arena, arena_alloc)
end

function polyplug_init(host, ctx)
  assert(type(host) == "number", "host pointer must be a number, got " .. type(host))
  assert(type(ctx) == "number", "ctx pointer must be a number, got " .. type(ctx))
  local c = ffi.cast(ctx_p, ffi.cast("uintptr_t", ctx))
  init_path = ffi.string(c.bundle_path.ptr, c.bundle_path.len)
  init_id = ffi.new("uint64_t", c.bundle_id)
  init_host = ffi.new("uint64_t", host)
  return {
    ["iso.PathProbe"] = {
      contract_version = 1,
      factory = function(_host) return {} end,
      functions = { [0] = path, [1] = flags, [2] = bundle_path, [3] = bundle_id, [4] = host_ptr, [5] = cpath },
    },
  }, { code = 0 }
end
