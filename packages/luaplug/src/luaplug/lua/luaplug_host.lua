-- luaplug's host side inside a bundle VM (shared by every backend).
--
-- Runs as the first chunk of every fresh state, before the bundle, and returns
-- a table of entry points the engine keeps a reference to. It creates no
-- globals and captures the builtins it uses, so a bundle that rewrites its
-- globals cannot change how it is called.
--
-- Invariants:
-- * `cell` is a double[4] owned by the engine outside Lua; its slots are named
--   alike here (THREAD, DEPTH, RETIRED, LIVE), in luaplug.reentry (CELL_*) and
--   in luaplug_entry.h (LUAPLUG_CELL_*):
--   THREAD id of the thread running Lua code in this state (0 when idle),
--   DEPTH nesting depth, RETIRED non-zero once the VM is retired,
--   LIVE live (non-default) instances over all contracts of the state.
--   The engine reads THREAD/DEPTH to refuse a same-thread re-entry it cannot
--   handle, reads LIVE and writes RETIRED without entering Lua (so a reload can
--   count instances while a call is still running in the old VM).
-- * A contract's `busy` flag is set only while one of its handlers runs, so a
--   set flag on entry means the same contract is re-entered on this thread
--   (other threads are kept out by the engine's per-state lock).
-- * Init results are validated here but reported as (kind, details...): the
--   error texts live in the Python core.
-- * With an instruction budget (P.harden) every entry into bundle code runs
--   with a count hook armed and the JIT off (LuaJIT runs no hooks in compiled
--   code); the hook never fails inside this file's own functions, so the
--   bookkeeping around a guest call always completes.

-- Loading runs with a long GC pause. A fresh state's heap is small, so the
-- default pause would run several incremental cycles through the SDK and the
-- bundle's chunk, and P.init ends with a full collection anyway. Still bounded:
-- a load making garbage past LOAD_PAUSE percent of its live heap is collected.
-- Not under a memory cap: LuaJIT has no emergency collection, so a capped state
-- collects as often as usual.
local LOAD_PAUSE = 1000
local normal_pause = collectgarbage("setpause", LOAD_PAUSE)
collectgarbage("restart", -1)  -- -1: the threshold follows the new pause now

local ffi = require("ffi")
local G = _G
local error, setmetatable, raw_getfenv, raw_setfenv = error, setmetatable, getfenv, setfenv
-- Every function of this file (and every closure it makes later) runs with
-- HOST_ENV as its environment: the budget hook tells luaplug's own frames from
-- the bundle's by this table, which no bundle can get hold of (getfenv and
-- setfenv refuse to hand it out or to change it, see P.harden). Globals still
-- read through to the state's globals, as before.
local HOST_ENV = setmetatable({}, { __index = G })
raw_setfenv(1, HOST_ENV)
local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local xpcall, pcall, rawget, unpack, maxn, next = xpcall, pcall, rawget, unpack, table.maxn, next
local debug_traceback, find, sub = debug.traceback, string.find, string.sub
-- The error handler of every protected call here: the traceback ends at the
-- bundle's frames (the prelude's own xpcall and what called it are cut), so the
-- text is the same whichever engine entered the VM.
-- An error value as text, whatever it is (a __tostring that fails included).
local function error_text(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" then return s end
  return "(error object is a " .. type(e) .. " value)"
end

local function traceback(e)
  local t = debug_traceback(error_text(e), 2)
  if type(t) ~= "string" then return t end
  local cut = find(t, "\n\t%[C%]: in function 'xpcall'") or find(t, "\n\t[^\n]*luaplug_host")
  if cut then t = sub(t, 1, cut - 1) end
  return t
end
local floor, max = math.floor, math.max
local sethook, gethook, getinfo = debug.sethook, debug.gethook, debug.getinfo
local G_load, G_require, collectgarbage = load, require, collectgarbage
local MEMORY_TEXT = "not enough memory"

-- LuaJIT runs no emergency collection when an allocation fails: after a guest
-- call failed for memory (or was stopped by the budget, or its traceback
-- failed: maybe with a full heap), collect now, so what it built is given back and the
-- bundle stays usable under its cap.
local function after_failure(err)
  if err == MEMORY_TEXT or err == "instruction limit exceeded" or err == "error in error handling" then
    collectgarbage("collect")
  end
  return err
end

local uptr = ffi.typeof("uintptr_t")
-- Anonymous layouts (a bundle's own ffi.cdef of the named ABI types must not
-- clash), parsed on first use: every state pays for a parse, and only the Lua
-- arena_alloc (engines without a C one) reads arenas; the HostApi declaration
-- with its function pointers costs the state a few KiB.
local arena_t, block_t = nil, nil
local host_t = nil
local function host_of(address)
  if host_t == nil then
    host_t = ffi.typeof(
      "struct { void* rt; void* reg; uint8_t* (*alloc)(void*, size_t, size_t); void (*free)(void*, void*, size_t, size_t); } *")
  end
  return ffi.cast(host_t, address)
end

local BLOCK_HEADER = 24
local MIN_BLOCK = 4096
-- Stands in for a nil impl object inside instance tables.
local NILV = {}

local P = {}
local capped_state = false  -- the state has a memory cap (set by P.setup)
-- The real ffi module stays reachable for the state's whole life (through P,
-- which the engine keeps): LuaJIT keeps the table of ffi.gc finalizers only as
-- an upvalue of ffi.gc, and closing a state whose finalizer table was
-- collected crashes (P.harden drops the module from an untrusted bundle's reach).
P.ffi_module = ffi
local cell = nil  -- set by P.setup
local THREAD, DEPTH, RETIRED, LIVE = 0, 1, 2, 3  -- the cell's slots
local current_thread = function() return 1 end
local host_num = 0
local contracts = {}
local dispatchers = {}
P.dispatchers = dispatchers

-- addr and the arena allocators run inside guest calls: none ends in a tail call
-- of a builtin, which would stop a trace started there from returning to the guest.
local function addr(p)
  local n = tonumber(ffi.cast(uptr, p))
  return n
end

-- spec §8: bump the arena whose address the call passed, else host->alloc.
local function arena_alloc(size, arena_addr)
  size = tonumber(size) or 0
  if size <= 0 then return 0 end
  if arena_addr == nil or arena_addr == 0 then
    if host_num == 0 then return 0 end
    local h = host_of(host_num)
    return addr(h.alloc(h, size, 1))
  end
  if arena_t == nil then
    arena_t = ffi.typeof("struct { uint8_t* cur; uint8_t* lim; uint8_t* base; void* host; void* first; } *")
    block_t = ffi.typeof("struct { void* next; size_t cap; size_t used; } *")
  end
  local a = ffi.cast(arena_t, arena_addr)
  local cur = addr(a.cur)
  if a.cur ~= nil and cur + size <= addr(a.lim) then
    a.cur = a.cur + size
    return cur
  end
  local b = a.first
  while b ~= nil do
    local blk = ffi.cast(block_t, b)
    local used, cap = tonumber(blk.used), tonumber(blk.cap)
    if used + size <= cap then
      blk.used = used + size
      return addr(b) + used
    end
    b = blk.next
  end
  if a.host == nil then return 0 end
  local cap = max(BLOCK_HEADER + 1 + size, MIN_BLOCK)
  local h = host_of(a.host)
  local raw = h.alloc(a.host, cap, 8)
  if raw == nil then return 0 end
  local blk = ffi.cast(block_t, raw)
  blk.next = a.first
  blk.cap = cap
  blk.used = BLOCK_HEADER + size
  a.first = raw
  return addr(raw) + BLOCK_HEADER
end
local guest_arena_alloc = arena_alloc

-- Instruction budget per entry (nil: none), set by P.harden.
local budget = nil
local LIMIT_TEXT = "instruction limit exceeded"
-- True from the moment the running entry went over its budget until the next
-- entry arms a fresh one.
local exceeded = false
-- Work charged to the running entry besides its instructions (the estimated steps of the
-- pattern functions of an untrusted bundle, see bound_patterns); over `budget` is over budget.
local charged = 0

-- The count hook. It uses captured functions only (the bundle may replace any
-- global) and allocates nothing (it also fires when the heap is full).
local function on_budget()
  -- Past the budget every further bundle instruction fails: a bundle that
  -- catches the error (pcall in a loop) is stopped at its next instruction.
  sethook(on_budget, "", 1)
  exceeded = true
  -- luaplug's own frames always complete (level 2: the interrupted function).
  if raw_getfenv(2) == HOST_ENV then return end
  error(LIMIT_TEXT, 0)
end

-- xpcall(f, traceback, ...) with the budget armed; the previous hook (an outer
-- entry's) is put back afterwards. Returns (ok, value) only and allocates
-- nothing outside the protected call, so a full heap cannot make it throw.
local function budgeted(f, a1, a2, a3, a4, a5)
  local h, m, c = gethook()
  local outer, outer_charged = exceeded, charged
  exceeded, charged = false, 0
  sethook(on_budget, "", budget)
  local ok, v = xpcall(f, traceback, a1, a2, a3, a4, a5)
  sethook(h, m, c)
  -- Over budget is a failure even when the bundle caught the error and
  -- returned at once (`return pcall(spin)`: no instruction of its own left).
  if ok and exceeded then ok, v = false, LIMIT_TEXT end
  exceeded, charged = outer, outer_charged
  if not ok then after_failure(v) end
  return ok, v
end

-- (ok, value) of a protected guest call. Not a tail call: the traceback must
-- show xpcall, where it is cut.
local function guest_pcall(f, a1)
  if budget ~= nil then
    local ok, v = budgeted(f, a1)
    return ok, v
  end
  local ok, v = xpcall(f, traceback, a1)
  if not ok then after_failure(v) end
  return ok, v
end

local function enter()
  local depth = cell[DEPTH]
  if depth == 0 then cell[THREAD] = current_thread() end
  cell[DEPTH] = depth + 1
  return depth
end

local function leave(depth)
  cell[DEPTH] = depth
  if depth == 0 then cell[THREAD] = 0 end
end

--- Compile `src` as text (never bytecode) under `name` and run it with a traceback
--- handler. Returns "ok", or ("syntax" | "memory" | "error", message). Every engine
--- runs the bundle's chunks through it (EngineState.run_chunk).
local load_chunk = load
function P.run_chunk(src, name)
  local f, err = load_chunk(src, name, "t")
  if f == nil then
    if err == "not enough memory" then return "memory", err end
    return "syntax", tostring(err)
  end
  local ok, e = guest_pcall(f)
  if ok then return "ok" end
  if e == "not enough memory" then return "memory", e end
  return "error", error_text(e)
end

--- run_chunk of `len` bytes of text at address `addr` (copied into the VM here,
--- inside a protected call, so a text over the memory cap fails cleanly).
function P.run_chunk_at(addr, len, name)
  local ok, src = pcall(ffi.string, ffi.cast("const char*", addr), len)
  if not ok then
    if src == MEMORY_TEXT then return "memory", src end
    return "error", error_text(src)
  end
  return P.run_chunk(src, name)
end

--- package[field] = entries .. ";" .. package[field] (the bundle's module paths; set by the
--- core before the bundle runs, through this entry on every engine); then the same for
--- field2 and entries2 when given (both fields in one call).
function P.prepend_package(field, entries, field2, entries2)
  local pkg = G.package
  local current = pkg[field]
  if type(current) == "string" and current ~= "" then entries = entries .. ";" .. current end
  pkg[field] = entries
  if field2 ~= nil then P.prepend_package(field2, entries2) end
end

--- Wire the state to its engine. `cell_addr` / `thread_fn_addr` are addresses
--- (0: use an internal cell / no thread ids); `alloc_fn` (the address of a C
--- `uint64_t (double size, double arena, double host)`) replaces the Lua arena_alloc;
--- `capped` is true (or 1) when the state has a memory limit. Called by the core once the
--- prelude is in.
function P.setup(host, cell_addr, thread_fn_addr, alloc_fn, capped)
  host_num = host or 0
  capped = capped == true or capped == 1
  capped_state = capped
  if capped then
    collectgarbage("setpause", normal_pause)
    collectgarbage("restart", -1)
    normal_pause = nil
    -- A capped state runs interpreted, for good: LuaJIT 2.1's compiled code that
    -- meets a full heap call after call can crash inside libluajit (seen with
    -- Debian's 2.1.0-beta3); the interpreter fails such allocations cleanly.
    local jit = G_require("jit")
    jit.off()
    jit.flush()
    jit.on = function() end
  end
  if cell_addr and cell_addr ~= 0 then
    cell = ffi.cast("double*", cell_addr)
  else
    cell = ffi.new("double[4]")
  end
  if thread_fn_addr and thread_fn_addr ~= 0 then
    local f = ffi.cast("uint64_t (*)(void)", thread_fn_addr)
    current_thread = function()
      local id = tonumber(f())
      return id
    end
  end
  if alloc_fn ~= nil and alloc_fn ~= 0 then
    local c_alloc = ffi.cast("uint64_t (*)(double, double, double)", alloc_fn)
    local host_n = host_num
    guest_arena_alloc = function(size, arena_addr)
      local p = tonumber(c_alloc(tonumber(size) or 0, arena_addr or 0, host_n))
      return p
    end
  end
end

local function describe(v)
  local t = type(v)
  if t == "string" then return ("string %q"):format(v) end
  if t == "number" or t == "boolean" then return t .. " " .. tostring(v) end
  return t
end

-- A value's type as polyplug 0.1.3's loader names it in `error converting Lua <type> to <T>`:
-- an integral number in [-2^63, 2^63) (not -0) is an integer, cdata is "other".
local function conversion_type(v)
  local t = type(v)
  if t == "number" then
    if v == floor(v) and v >= -2 ^ 63 and v < 2 ^ 63 and (v ~= 0 or 1 / v > 0) then return "integer" end
    return "number"
  end
  if t == "cdata" then return "other" end
  return t
end

local function conversion_error(v, to)
  return "error converting Lua " .. conversion_type(v) .. " to " .. to
end

-- One handler call: (ok, err). Runs inside the dispatcher's pcall. No tail
-- calls: the traceback must show xpcall, where it is cut.
local function run_guest(f, inst, args, out, arena)
  enter()
  local ok, err
  if budget == nil then
    ok, err = xpcall(f, traceback, inst, args, out, arena, guest_arena_alloc)
  else
    ok, err = budgeted(f, inst, args, out, arena, guest_arena_alloc)
  end
  return ok, err
end

local function make_dispatcher(c)
  local fns, insts, n = c.fns, c.insts, c.n
  if budget == nil and not capped_state then
    -- Neither a budget nor a cap: no hook can fire here and only the process
    -- allocator can fail, so the bookkeeping runs unprotected (one call less).
    return function(fn_id, iid, args, out, arena)
      if cell[RETIRED] ~= 0 then return 5 end
      -- -1: as in the protected dispatcher below
      if type(fn_id) ~= "number" or type(args) ~= "number" or type(out) ~= "number" or type(arena) ~= "number" then
        return -1
      end
      if fn_id % 1 ~= 0 or args < 0 or out < 0 or arena < 0 then return -1 end
      if fn_id < 0 or fn_id >= n then return 6 end
      local inst = insts[iid]
      if inst == nil then return 6 end
      if inst == NILV then inst = nil end
      if c.busy then return 9 end
      local depth = enter()
      c.busy = true
      local ok, err = xpcall(fns[fn_id], traceback, inst, args, out, arena, guest_arena_alloc)
      c.busy = false
      leave(depth)
      if ok then return 0 end
      return 1, error_text(after_failure(err))
    end
  end
  return function(fn_id, iid, args, out, arena)
    if cell[RETIRED] ~= 0 then return 5 end
    -- -1: fn_id is not an integer or an argument is not an address number; the caller
    -- converts (or refuses, as the C ABI's unsigned types would) and retries
    if type(fn_id) ~= "number" or type(args) ~= "number" or type(out) ~= "number" or type(arena) ~= "number" then
      return -1
    end
    if fn_id % 1 ~= 0 or args < 0 or out < 0 or arena < 0 then return -1 end
    if fn_id < 0 or fn_id >= n then return 6 end
    local inst = insts[iid]
    if inst == nil then return 6 end
    if inst == NILV then inst = nil end
    if c.busy then return 9 end
    local depth = cell[DEPTH]
    c.busy = true
    -- Whatever fails inside (a full heap included), busy and the cell are put
    -- back: stores into existing fields and the cell allocate nothing.
    local pok, ok, err = pcall(run_guest, fns[fn_id], inst, args, out, arena)
    c.busy = false
    leave(depth)
    if not pok then ok, err = false, ok end
    if ok then return 0 end
    return 1, error_text(after_failure(err))
  end
end

local byte = string.byte

-- Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else return false end
    for k = 1, len - 1 do
      local d = byte(s, i + k)
      if d == nil then return false end
      if k == 1 then
        if d < lo or d > hi then return false end
      elseif d < 0x80 or d > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

-- Reads one registration entry; returns a contract record or (nil, kind, ...).
local function read_entry(cname, entry, chunk)
  if type(cname) == "number" then cname = tostring(cname) end
  if type(cname) ~= "string" then
    return nil, "iter", conversion_error(cname, "String (expected string or number)")
  end
  if cname == "" or not is_utf8(cname) then
    -- the registry takes non-empty UTF-8 names only (runtime-semantics)
    return nil, "bad_name", describe(cname)
  end
  if type(entry) ~= "table" then
    return nil, "iter", conversion_error(entry, "table")
  end
  local version = tonumber(entry.contract_version)
  if version == nil or version < 0 or version > 4294967295 or version ~= floor(version) then version = 1 end
  local plugin = entry.plugin_name
  if type(plugin) == "number" then plugin = tostring(plugin) end
  if type(plugin) ~= "string" then plugin = chunk end
  local functions = entry.functions
  if type(functions) ~= "table" then
    return nil, "no_functions", cname, conversion_error(functions, "table")
  end
  local fns, n = {}, 0
  while true do
    local f = functions[n]
    if f == nil then break end
    if type(f) ~= "function" then
      return nil, "slot", n, cname, conversion_error(f, "function")
    end
    fns[n] = f
    n = n + 1
  end
  local factory = entry.factory
  if type(factory) ~= "function" then
    return nil, "no_factory", cname, conversion_error(factory, "function")
  end
  return { name = cname, version = version, plugin = plugin, fns = fns, n = n, factory = factory }
end

-- The value protocol of untrusted bundles (set by P.values, luaplug_harden.lua); nil: the raw protocol.
local value = nil
local read_value_entry

local function run_init(host, ctx, chunk)
  local init = rawget(G, "polyplug_init")
  if type(init) ~= "function" then return "err", "missing_init" end
  local depth = enter()
  local res
  if value ~= nil then
    res = { xpcall(init, traceback, value.host_obj) }
  else
    res = { xpcall(init, traceback, host, ctx) }
  end
  leave(depth)
  if not res[1] then return "err", "init_error", error_text(res[2]) end
  local regs, status = res[2], res[3]
  if type(regs) ~= "table" or type(status) ~= "table" then
    local bad = status
    if type(regs) ~= "table" then bad = regs end
    return "err", "init_result", conversion_error(bad, "table")
  end
  -- spec §3: a code that is not a number counts as 0; any other non-zero number (negative,
  -- fractional, past 2^32, NaN) is a refusal.
  local code = tonumber(status.code)
  if code ~= nil and code ~= 0 then
    local msg = status.message
    if type(msg) ~= "string" then msg = "" end
    return "err", "init_code", code, msg
  end
  local found = {}
  for cname, entry in pairs(regs) do
    local rec, kind, a, b, c
    if value ~= nil then
      rec, kind, a, b, c = read_value_entry(cname, entry, chunk)
    else
      rec, kind, a, b, c = read_entry(cname, entry, chunk)
    end
    if rec == nil then return "err", kind, a, b, c end
    found[#found + 1] = rec
  end
  if #found == 0 then return "err", "empty" end
  local out = { "ok", #found }
  for i, rec in ipairs(found) do
    local depth2 = enter()
    local ok, impl = xpcall(rec.factory, traceback, value == nil and host or nil)
    leave(depth2)
    if not ok then return "err", "factory_failed", rec.name, error_text(impl) end
    if impl == nil then impl = NILV end
    rec.insts = { [0] = impl }
    rec.next_id = 1
    rec.busy = false
    contracts[i] = rec
    dispatchers[i] = make_dispatcher(rec)
    out[#out + 1] = rec.name
    out[#out + 1] = rec.version
    out[#out + 1] = rec.plugin
    out[#out + 1] = rec.n
  end
  return unpack(out)
end

--- Run the bundle's polyplug_init and read what it returned (spec §3-§4).
--- Returns "ok", n, then (name, major, plugin_name, function_count) per contract,
--- indexed 1..n in that order; or "err", kind, details...
function P.init(host, ctx, chunk)
  local res
  if budget == nil then
    res = { pcall(run_init, host, ctx, chunk) }
  else
    local ok, packed = budgeted(function() return { true, run_init(host, ctx, chunk) } end)
    res = ok and packed or { false, packed }
  end
  if not res[1] then return "err", "init_error", error_text(res[2]) end
  if res[2] == "ok" then
    -- Loading is over: drop what only loading needs, and collect, so the
    -- state keeps no garbage (its memory goes back to the process allocator).
    P.init, P.run_chunk, P.run_chunk_at, P.setup, P.harden, P.values = nil, nil, nil, nil, nil, nil
    P.prepend_package, P.load_part = nil, nil
    if normal_pause ~= nil then
      -- back to the usual pause, unless the bundle chose its own while loading
      local now = collectgarbage("setpause", normal_pause)
      if now ~= LOAD_PAUSE then collectgarbage("setpause", now) end
    end
    collectgarbage("collect")
  end
  return unpack(res, 2, maxn(res))
end

function P.dispatcher(cidx)
  return dispatchers[cidx]
end

--- dispatchers[cidx] with instance `iid` bound: (fn_id[, args[, out[, arena]]]);
--- omitted pointers are null (each argument a caller does not pass is one less to convert).
function P.bind(cidx, iid)
  local d = dispatchers[cidx]
  if d == nil then return nil end
  return function(fn_id, args, out, arena) return d(fn_id, iid, args or 0, out or 0, arena or 0) end
end

local function create_guest(factory)
  enter()
  local ok, impl = guest_pcall(factory, host_num)
  return ok, impl
end

--- A fresh instance of contract `cidx` (spec §7): its id, or 0 and a reason.
function P.create(cidx)
  local c = contracts[cidx]
  if c == nil or cell[RETIRED] ~= 0 then return 0, "the bundle VM was retired" end
  if c.busy then return 0, "reentrant create_instance from inside a call of the same contract" end
  local depth = cell[DEPTH]
  local pok, ok, impl = pcall(create_guest, c.factory)
  leave(depth)
  if not pok then ok, impl = false, ok end
  if not ok then return 0, error_text(impl) end
  local id = c.next_id
  c.next_id = id + 1
  if impl == nil then impl = NILV end
  c.insts[id] = impl
  cell[LIVE] = cell[LIVE] + 1
  return id
end

function P.destroy(cidx, iid)
  local c = contracts[cidx]
  if c ~= nil and iid ~= 0 and c.insts[iid] ~= nil then
    c.insts[iid] = nil
    cell[LIVE] = cell[LIVE] - 1
  end
end

-- == Limits and untrusted mode (luaplug_harden.lua) ============================================
-- P.harden and P.values live in a part of their own, loaded only into a state that gets an
-- instruction budget or runs an untrusted bundle: every other state neither loads nor keeps it.
-- What it may do to this file's state is the functions in `shared` below.

--- Run the limits part (`len` bytes at address `addr`: its bytecode for this VM, or its
--- source) once, before P.harden and P.values; it raises when it cannot be loaded.
function P.load_part(addr, len)
  local src = ffi.string(ffi.cast("const char*", addr), len)
  local f, err = G_load(src, "=luaplug_host")
  if f == nil then error(err, 0) end
  raw_setfenv(f, HOST_ENV)
  local shared = {
    P = P, G = G, ffi = ffi, HOST_ENV = HOST_ENV, LIMIT_TEXT = LIMIT_TEXT,
    error = error, setmetatable = setmetatable, getfenv = raw_getfenv, setfenv = raw_setfenv,
    type = type, pairs = pairs, ipairs = ipairs, tostring = tostring, tonumber = tonumber,
    xpcall = xpcall, pcall = pcall, unpack = unpack, find = find, sub = sub, byte = byte,
    floor = floor, max = max, getinfo = getinfo, G_load = G_load, G_require = G_require,
  }

  -- The instruction budget of every later entry (P.harden).
  function shared.set_budget(limit)
    budget = limit
  end

  -- Charge `cost` (a pattern call's estimated steps) to the running entry; true when that puts
  -- it over its budget (then every further bundle instruction fails, as on_budget does).
  function shared.charge_budget(cost)
    if budget == nil then return false end
    charged = charged + cost
    if charged > budget then
      exceeded = true
      sethook(on_budget, "", 1)
      return true
    end
    return false
  end

  function shared.over_budget()
    return exceeded
  end

  -- The value protocol (P.values): its state and how init reads an entry of it.
  function shared.set_value(v, reader)
    value, read_value_entry = v, reader
  end

  function shared.host_address()
    return host_num
  end

  f(shared)
  P.load_part = nil
end

--- Drop everything the bundle built, so the state's memory goes with it.
function P.shutdown()
  cell[RETIRED] = 1
  for i in pairs(contracts) do
    contracts[i] = nil
    dispatchers[i] = nil
  end
end

return P