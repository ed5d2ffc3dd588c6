-- bench.PeerLoop@1: peer calls timed from inside Lua (spec section 13), for integration/benchmarks.
--   fn 0 run(struct { int32_t n; int32_t mode; })
--        -> struct { double ns; int64_t sum; int32_t code; int32_t pad; }
--     mode 0: resolve iso.Adder@1 once, then n calls of its add (fn 0) through dispatch.vm.call
--     mode 1: n times find + resolve + create instance + add + destroy (a guest that caches nothing)
--     mode 2: n calls of a local Lua add on the same pointers (no peer call: the floor)
--     mode 3: n calls of that add's dispatch.vm.call with a null loader_data, which the callee
--             refuses at once (InvalidPointer): the guest's own share of a cached peer call
--             (LuaJIT's FFI call with structs by value, which it does not compile)
--   ns: nanoseconds the n calls took (CLOCK_MONOTONIC through the ffi; os.clock if unavailable),
--   sum: the sum of the n results (each 20 + 22; mode 3: 42 per InvalidPointer answer),
--   code: 0 or the first non-zero AbiError code (mode 3: the first code other than InvalidPointer).
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")

local ADDER_ID = abi.guest_contract_id("iso.Adder", 1)
local NULL_INDEX = 0xFFFFFFFF
local INVALID_POINTER = 8

local args_p = ffi.typeof("struct { int32_t n; int32_t mode; } *")
local result_p = ffi.typeof("struct { double ns; int64_t sum; int32_t code; int32_t pad; } *")
local pair_t = ffi.typeof("struct { int32_t a; int32_t b; }")
local pair_p = ffi.typeof("$ *", pair_t)
local pair_array_t = ffi.typeof("$[1]", pair_t)
local i32p = ffi.typeof("int32_t*")

-- A monotonic clock in nanoseconds. The declarations are guarded: another module of the
-- same VM may have declared clock_gettime already.
pcall(ffi.cdef, "typedef struct { int64_t tv_sec; int64_t tv_nsec; } luaplug_bench_timespec;")
pcall(ffi.cdef, "int clock_gettime(int clk_id, luaplug_bench_timespec *tp);")
local now_ns
do
  local ok, ts = pcall(ffi.new, "luaplug_bench_timespec")
  local C = ffi.C
  if ok and pcall(function() return C.clock_gettime end) and C.clock_gettime(1, ts) == 0 then
    now_ns = function()
      C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
    end
  else
    now_ns = function() return os.clock() * 1e9 end
  end
end

local function resolve(host)
  local handle = host.find_guest_contract(host, ADDER_ID, 1)
  if handle.index == NULL_INDEX then error("iso.Adder@1 not found") end
  local iface = host.resolve_guest_contract(host, handle)
  if iface == nil then error("iso.Adder@1 is stale") end
  return iface
end

local function local_add(_self, args, out)
  local a = ffi.cast(pair_p, args)
  if out ~= 0 then ffi.cast(i32p, out)[0] = a.a + a.b end
end

-- Each loop returns (elapsed ns, sum, code).
local function cached(host, n, pair, slot, err)
  local iface = resolve(host)
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local call, data = iface.dispatch.vm.call, iface.dispatch.vm.loader_data
  local sum, code = 0, 0
  local t0 = now_ns()
  for _ = 1, n do
    call(data, inst[0], 0, pair, slot, nil, err)
    if err[0].code ~= 0 then code = err[0].code; break end
    sum = sum + slot[0]
  end
  local elapsed = now_ns() - t0
  host.destroy_guest_instance(host, iface, inst[0])
  return elapsed, sum, code
end

local function uncached(host, n, pair, slot, err)
  local inst = ffi.new("GuestContractInstance[1]")
  local sum, code = 0, 0
  local t0 = now_ns()
  for _ = 1, n do
    local iface = resolve(host)
    host.create_guest_instance(host, iface, nil, inst)
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, pair, slot, nil, err)
    host.destroy_guest_instance(host, iface, inst[0])
    if err[0].code ~= 0 then code = err[0].code; break end
    sum = sum + slot[0]
  end
  return now_ns() - t0, sum, code
end

local function guest_side(host, n, pair, slot, err)
  local iface = resolve(host)
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local call, null_data = iface.dispatch.vm.call, ffi.new("VmLoaderData")
  local sum, code = 0, 0
  local t0 = now_ns()
  for _ = 1, n do
    call(null_data, inst[0], 0, pair, slot, nil, err)
    if err[0].code ~= INVALID_POINTER then code = err[0].code; break end
    sum = sum + 42
  end
  local elapsed = now_ns() - t0
  host.destroy_guest_instance(host, iface, inst[0])
  return elapsed, sum, code
end

local function in_vm(_host, n, pair, slot)
  local args = tonumber(ffi.cast("uintptr_t", pair))
  local out = tonumber(ffi.cast("uintptr_t", slot))
  local sum = 0
  local t0 = now_ns()
  for _ = 1, n do
    local_add(nil, args, out, 0, 0)
    sum = sum + slot[0]
  end
  return now_ns() - t0, sum, 0
end

local loops = { [0] = cached, [1] = uncached, [2] = in_vm, [3] = guest_side }

local function run(self, args, out)
  local a = ffi.cast(args_p, args)
  local loop = loops[a.mode]
  if loop == nil then error("unknown mode " .. tostring(a.mode)) end
  local host = a.mode ~= 2 and guest.cast_host_interface(self.host) or nil
  local pair = pair_array_t({ { 20, 22 } })
  local slot = ffi.new("int32_t[1]")
  local err = ffi.new("AbiError[1]")
  local elapsed, sum, code = loop(host, a.n, pair, slot, err)
  local r = ffi.cast(result_p, out)
  r.ns, r.sum, r.code = elapsed, sum, code
end

function polyplug_init(_host, _ctx)
  return {
    ["bench.PeerLoop"] = {
      contract_version = 1,
      plugin_name = "peerloop-plugin",
      factory = function(host) return { host = host } end,
      functions = { [0] = run },
    },
  }, { code = 0 }
end
