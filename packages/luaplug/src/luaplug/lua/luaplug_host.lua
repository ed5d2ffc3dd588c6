-- luaplug's host side inside a bundle VM (shared by every backend).
--
-- Runs as the first chunk of every fresh state, before the bundle, and returns
-- a table of entry points the engine keeps a reference to. It creates no
-- globals and captures the builtins it uses, so a bundle that rewrites its
-- globals cannot change how it is called.
--
-- Invariants:
-- * `cell` is a double[4] owned by the engine outside Lua:
--   [0] id of the thread running Lua code in this state (0 when idle),
--   [1] nesting depth, [2] non-zero once the VM is retired,
--   [3] live (non-default) instances over all contracts of the state.
--   The engine reads [0]/[1] to refuse a same-thread re-entry it cannot
--   handle, reads [3] and writes [2] without entering Lua (so a reload can
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
-- collected crashes. Untrusted bundles see a copy of the module without gc.
P.ffi_module = ffi
local cell = nil  -- set by P.setup
local current_thread = function() return 1 end
local host_num = 0
local contracts = {}
local dispatchers = {}
P.dispatchers = dispatchers

local function addr(p)
  return tonumber(ffi.cast(uptr, p))
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
  local outer = exceeded
  exceeded = false
  sethook(on_budget, "", budget)
  local ok, v = xpcall(f, traceback, a1, a2, a3, a4, a5)
  sethook(h, m, c)
  -- Over budget is a failure even when the bundle caught the error and
  -- returned at once (`return pcall(spin)`: no instruction of its own left).
  if ok and exceeded then ok, v = false, LIMIT_TEXT end
  exceeded = outer
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
  local depth = cell[1]
  if depth == 0 then cell[0] = current_thread() end
  cell[1] = depth + 1
  return depth
end

local function leave(depth)
  cell[1] = depth
  if depth == 0 then cell[0] = 0 end
end

--- Compile `src` as text (never bytecode) under `name` and run it with a traceback
--- handler. Returns "ok", or ("syntax" | "memory" | "error", message). For engines
--- that run chunks through the prelude (the cffi engine does the same in C).
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

--- Wire the state to its engine. `cell_addr` / `thread_fn_addr` are addresses
--- (0: use an internal cell / no thread ids); `alloc_fn` (the address of a C
--- `uint64_t (double size, double arena, double host)`) replaces the Lua arena_alloc;
--- `capped` is true when the state has a memory limit.
function P.setup(host, cell_addr, thread_fn_addr, alloc_fn, capped)
  host_num = host or 0
  capped_state = capped and true or false
  if capped then
    collectgarbage("setpause", normal_pause)
    collectgarbage("restart", -1)
    normal_pause = nil
  end
  if cell_addr and cell_addr ~= 0 then
    cell = ffi.cast("double*", cell_addr)
  else
    cell = ffi.new("double[4]")
  end
  if thread_fn_addr and thread_fn_addr ~= 0 then
    local f = ffi.cast("uint64_t (*)(void)", thread_fn_addr)
    current_thread = function() return tonumber(f()) end
  end
  if alloc_fn ~= nil and alloc_fn ~= 0 then
    local c_alloc = ffi.cast("uint64_t (*)(double, double, double)", alloc_fn)
    local host_n = host_num
    guest_arena_alloc = function(size, arena_addr)
      return tonumber(c_alloc(tonumber(size) or 0, arena_addr or 0, host_n))
    end
  end
end

local function describe(v)
  local t = type(v)
  if t == "string" then return ("string %q"):format(v) end
  if t == "number" or t == "boolean" then return t .. " " .. tostring(v) end
  return t
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
      if cell[2] ~= 0 then return 5 end
      if type(args) ~= "number" or type(out) ~= "number" or type(arena) ~= "number" then return -1 end
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
    if cell[2] ~= 0 then return 5 end
    -- -1: an argument is not an address number; the caller converts and retries
    if type(args) ~= "number" or type(out) ~= "number" or type(arena) ~= "number" then return -1 end
    if fn_id < 0 or fn_id >= n then return 6 end
    local inst = insts[iid]
    if inst == nil then return 6 end
    if inst == NILV then inst = nil end
    if c.busy then return 9 end
    local depth = cell[1]
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
    return nil, "iter", "registration key is " .. describe(cname) .. ", expected a contract name string"
  end
  if cname == "" or not is_utf8(cname) then
    -- the registry takes non-empty UTF-8 names only (runtime-semantics)
    return nil, "bad_name", describe(cname)
  end
  if type(entry) ~= "table" then
    return nil, "iter", "registration for '" .. cname .. "' is " .. describe(entry) .. ", expected a table"
  end
  local version = tonumber(entry.contract_version)
  if version == nil or version < 0 or version > 4294967295 or version ~= floor(version) then version = 1 end
  local plugin = entry.plugin_name
  if type(plugin) == "number" then plugin = tostring(plugin) end
  if type(plugin) ~= "string" then plugin = chunk end
  local functions = entry.functions
  if type(functions) ~= "table" then
    return nil, "no_functions", cname, "expected a table, found " .. describe(functions)
  end
  local fns, n = {}, 0
  while true do
    local f = functions[n]
    if f == nil then break end
    if type(f) ~= "function" then
      return nil, "slot", n, cname, "expected a function, found " .. describe(f)
    end
    fns[n] = f
    n = n + 1
  end
  local factory = entry.factory
  if type(factory) ~= "function" then
    return nil, "no_factory", cname, "expected a function, found " .. describe(factory)
  end
  return { name = cname, version = version, plugin = plugin, fns = fns, n = n, factory = factory }
end

local function run_init(host, ctx, chunk)
  local init = rawget(G, "polyplug_init")
  if type(init) ~= "function" then return "err", "missing_init" end
  local depth = enter()
  local res = { xpcall(init, traceback, host, ctx) }
  leave(depth)
  if not res[1] then return "err", "init_error", error_text(res[2]) end
  local regs, status = res[2], res[3]
  if type(regs) ~= "table" or type(status) ~= "table" then
    return "err", "init_error", "expected (registrations, status) tables, got (" ..
      describe(regs) .. ", " .. describe(status) .. ")"
  end
  local code = tonumber(status.code)
  if code == nil or code < 0 or code ~= floor(code) or code > 4294967295 then code = 0 end
  if code ~= 0 then
    local msg = status.message
    if type(msg) ~= "string" then msg = "" end
    return "err", "init_code", code, msg
  end
  local found = {}
  for cname, entry in pairs(regs) do
    local rec, kind, a, b, c = read_entry(cname, entry, chunk)
    if rec == nil then return "err", kind, a, b, c end
    found[#found + 1] = rec
  end
  if #found == 0 then return "err", "empty" end
  local out = { "ok", #found }
  for i, rec in ipairs(found) do
    local depth2 = enter()
    local ok, impl = xpcall(rec.factory, traceback, host)
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
    P.init, P.run_chunk, P.run_chunk_at, P.setup, P.harden = nil, nil, nil, nil, nil
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
  if c == nil or cell[2] ~= 0 then return 0, "the bundle VM was retired" end
  if c.busy then return 0, "reentrant create_instance from inside a call of the same contract" end
  local depth = cell[1]
  local pok, ok, impl = pcall(create_guest, c.factory)
  leave(depth)
  if not pok then ok, impl = false, ok end
  if not ok then return 0, error_text(impl) end
  local id = c.next_id
  c.next_id = id + 1
  if impl == nil then impl = NILV end
  c.insts[id] = impl
  cell[3] = cell[3] + 1
  return id
end

function P.destroy(cidx, iid)
  local c = contracts[cidx]
  if c ~= nil and iid ~= 0 and c.insts[iid] ~= nil then
    c.insts[iid] = nil
    cell[3] = cell[3] - 1
  end
end

local SAFE_FFI = { "cast", "new", "typeof", "sizeof", "alignof", "offsetof", "istype", "string", "copy",
  "fill", "cdef", "abi", "os", "arch", "errno" }

local HOST_FUNCTION_TEXT = "luaplug's own functions are not open to bundle code"

-- Whether `f` is one of this file's functions (a C function never is).
local function is_host_fn(f)
  return type(f) == "function" and raw_getfenv(f) == HOST_ENV
end

-- getfenv/setfenv's first argument as the function it names (a level is
-- resolved here, so the check and the change see the same function); 0 stays
-- the running thread.
local function fenv_target(f)
  if type(f) == "function" then return f end
  local level = f == nil and 1 or tonumber(f)
  if level == nil or level < 0 then error("bad argument #1 (level must be non-negative)", 3) end
  if level == 0 then return 0 end
  -- + 2: this function and the wrapper that called it
  local info = getinfo(level + 2, "f")
  if info == nil then error("bad argument #1 (invalid level)", 3) end
  return info.func
end

-- The instruction budget must hold against the bundle: it cannot reach the
-- hook, the exemption of luaplug's frames (HOST_ENV) or the functions that
-- arm it, and an error handler of its own never runs past the budget.
local function guard_budget(dbg)
  local raw_getupvalue, raw_setupvalue = dbg.getupvalue, dbg.setupvalue
  local raw_upvalueid, raw_upvaluejoin = dbg.upvalueid, dbg.upvaluejoin
  local raw_dgetfenv, raw_dsetfenv = dbg.getfenv, dbg.setfenv
  local raw_getlocal, raw_setlocal, raw_getinfo = dbg.getlocal, dbg.setlocal, getinfo
  G.getfenv = function(f)
    local env = raw_getfenv(fenv_target(f))
    if env == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    return env
  end
  G.setfenv = function(f, t)
    local target = fenv_target(f)
    if raw_getfenv(target) == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    return raw_setfenv(target, t)
  end
  G.xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then return xpcall(f, handler, ...) end
    -- Past the budget the handler would run with hooks off (LuaJIT calls it
    -- inside the hook that raised the error): the error goes back unhandled.
    return xpcall(f, function(e)
      if exceeded then return e end
      return handler(e)
    end, ...)
  end
  if dbg.sethook == nil then return end
  dbg.sethook = function() error("debug.sethook is reserved by luaplug's instruction limit", 2) end
  dbg.gethook = function() return nil end
  local function refuse_host(raw)
    if raw == nil then return nil end
    return function(f, ...)
      if is_host_fn(f) then error(HOST_FUNCTION_TEXT, 2) end
      return raw(f, ...)
    end
  end
  dbg.getupvalue, dbg.setupvalue = refuse_host(raw_getupvalue), refuse_host(raw_setupvalue)
  dbg.upvalueid = refuse_host(raw_upvalueid)
  if raw_upvaluejoin ~= nil then
    dbg.upvaluejoin = function(f1, n1, f2, n2)
      if is_host_fn(f1) or is_host_fn(f2) then error(HOST_FUNCTION_TEXT, 2) end
      return raw_upvaluejoin(f1, n1, f2, n2)
    end
  end
  dbg.getfenv = function(o)
    local env = raw_dgetfenv(o)
    if env == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    return env
  end
  dbg.setfenv = function(o, t)
    if raw_dgetfenv(o) == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    return raw_dsetfenv(o, t)
  end
  -- getlocal/setlocal([thread,] level, n): not into a frame of luaplug's.
  local function frame_guard(raw)
    return function(a, b, ...)
      local info
      if type(a) == "thread" then
        if type(b) == "number" then info = raw_getinfo(a, b, "f") end
      elseif type(a) == "number" then
        info = raw_getinfo(a + 1, "f")
      end
      if info ~= nil and is_host_fn(info.func) then error(HOST_FUNCTION_TEXT, 2) end
      if type(a) == "number" then return raw(a + 1, b, ...) end
      return raw(a, b, ...)
    end
  end
  dbg.getlocal, dbg.setlocal = frame_guard(raw_getlocal), frame_guard(raw_setlocal)
end

--- Limits and restrictions, applied before any bundle code runs.
--- `limit` > 0: an instruction budget per call (the JIT goes off for good);
--- `untrusted` ~= 0: the bundle's globals lose os, io, debug, dofile/loadfile,
--- bytecode loading, C modules and the raw ffi (see docs: untrusted mode).
function P.harden(limit, untrusted)
  local jit = G_require("jit")
  if limit ~= nil and limit > 0 then
    budget = limit
    jit.off()
    jit.flush()
    -- The budget relies on the interpreter and on owning the hook.
    jit.on = function() end
    guard_budget(G.debug or {})
  end
  if untrusted == nil or untrusted == 0 then return end
  local package = G.package
  local loaded, preload = package.loaded, package.preload
  for _, name in ipairs({ "os", "io", "debug" }) do
    G[name] = nil
    loaded[name] = nil
  end
  for _, name in ipairs({ "jit.util", "jit.profile" }) do
    loaded[name] = nil
    preload[name] = nil
  end
  jit.util = nil
  G.dofile, G.loadfile = nil, nil
  -- Source text only: a chunk given as bytecode fails to load.
  G.load = function(chunk, name, _mode, env) return G_load(chunk, name, "t", env) end
  G.loadstring = function(s, name) return G_load(s, name, "t") end
  package.loadlib = nil
  package.cpath = ""
  local loaders = package.loaders
  for i = #loaders, 3, -1 do loaders[i] = nil end  -- keep preload and Lua files; no C modules
  -- No finalizers: LuaJIT runs them with hooks off (outside any budget), at
  -- any allocation and when the VM closes.
  G.newproxy = nil
  local safe = {}
  for _, k in ipairs(SAFE_FFI) do safe[k] = ffi[k] end
  local raw_metatype = ffi.metatype
  safe.metatype = function(ct, mt)
    if type(mt) ~= "table" then return raw_metatype(ct, mt) end
    -- A copy: the bundle cannot add __gc to the table after the check.
    local copy = {}
    for k, v in next, mt do copy[k] = v end
    if rawget(copy, "__gc") ~= nil then
      error("ffi.metatype: __gc finalizers are not available to untrusted bundles", 2)
    end
    return raw_metatype(ct, copy)
  end
  loaded.ffi = safe
end

--- Drop everything the bundle built, so the state's memory goes with it.
function P.shutdown()
  cell[2] = 1
  for i in pairs(contracts) do
    contracts[i] = nil
    dispatchers[i] = nil
  end
end

return P
