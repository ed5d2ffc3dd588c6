-- luaplug's limits and untrusted mode inside a bundle VM: P.harden and P.values.
--
-- A part of the host prelude (luaplug_host.lua): its P.load_part runs this chunk, with the
-- prelude's environment (HOST_ENV), in a state that gets an instruction budget or runs an
-- untrusted bundle, before any bundle code; other states never load it. It receives the
-- prelude's captured builtins and the functions that reach the prelude's budget and value
-- protocol state (`shared`), and adds its entries to the prelude's table P.
--
-- Invariants (besides the prelude's):
-- * Every builtin used here is one the prelude captured, or one read from the globals while
--   this chunk runs, which is before any bundle code.
-- * The budget state (budget, charged, exceeded) and the value protocol stay the prelude's
--   locals: this part changes them only through set_budget, charge_budget and set_value.

local shared = ...
local P, G, ffi, HOST_ENV = shared.P, shared.G, shared.ffi, shared.HOST_ENV
local error, setmetatable, raw_getfenv, raw_setfenv = shared.error, shared.setmetatable, shared.getfenv, shared.setfenv
local type, pairs, ipairs, tostring, tonumber = shared.type, shared.pairs, shared.ipairs, shared.tostring, shared.tonumber
local xpcall, pcall, unpack = shared.xpcall, shared.pcall, shared.unpack
local find, sub, byte = shared.find, shared.sub, shared.byte
local floor, max, getinfo = shared.floor, shared.max, shared.getinfo
local G_load, G_require = shared.G_load, shared.G_require
local LIMIT_TEXT = shared.LIMIT_TEXT
local set_budget, charge_budget, over_budget = shared.set_budget, shared.charge_budget, shared.over_budget
local set_value, host_address = shared.set_value, shared.host_address

-- tostring and string.format of an untrusted bundle show no heap address: a table, function,
-- thread or userdata without its own __tostring is "<type>: #<n>" (n numbers the objects in the
-- order they are first shown), and "%p" is refused. print goes through the global tostring.
local function hide_addresses()
  local real_tostring, real_format, str_type = tostring, string.format, type
  local smatch, sgmatch, select_, error_ = string.match, string.gmatch, select, error
  local serial, next_serial = setmetatable({}, { __mode = "k" }), 0
  local function safe_tostring(v)
    local s = real_tostring(v)
    local t = str_type(v)
    if (t == "table" or t == "function" or t == "thread" or t == "userdata") and str_type(s) == "string" then
      if smatch(s, "^[%a ]+: 0x%x+$") ~= nil then
        local n = serial[v]
        if n == nil then
          next_serial = next_serial + 1
          n = next_serial
          serial[v] = n
        end
        return t .. ": #" .. n
      end
    end
    return s
  end
  local function safe_format(fmt, ...)
    if str_type(fmt) ~= "string" then return real_format(fmt, ...) end
    local args, n = { ... }, select_("#", ...)
    local i = 0
    for spec in sgmatch(fmt, "%%[-+ #0]*%d*%.?%d*(.)") do
      if spec ~= "%" then
        i = i + 1
        if spec == "p" then error_("untrusted mode: string.format does not take %p", 2) end
        if spec == "s" and i <= n then
          local v = args[i]
          local vt = str_type(v)
          if vt ~= "string" and vt ~= "number" then args[i] = safe_tostring(v) end
        end
      end
    end
    return real_format(fmt, unpack(args, 1, n))
  end
  G.tostring = safe_tostring
  G.string.format = safe_format
end

-- == Pattern bound (untrusted bundles) ==========================================================
-- LuaJIT's pattern matcher backtracks inside one C call, where no count hook runs. An untrusted
-- bundle's string.find/match/gmatch/gsub (the string table is also the __index of the string
-- metatable, so `s:find(...)` is the same function) estimate the worst-case number of matcher
-- steps of a call before running it: a call over PATTERN_LIMIT fails with a "pattern limit
-- exceeded" error, and under an instruction budget the estimate is charged to the entry
-- (`charged`). The originals are upvalues of functions of this file only.

-- The estimated matcher steps one call may take (a step is a few ns on a current x86 core).
local PATTERN_LIMIT = 2 ^ 24
-- A plain search (memchr, then memcmp) compares this many bytes in the time of one step.
local PLAIN_BYTES_PER_STEP = 32
-- Longer patterns are refused unparsed (every byte of a pattern costs at least a step).
local MAX_PATTERN_BYTES = PATTERN_LIMIT / 64
-- Patterns up to this length are analysed for disjoint classes (and their analysis cached).
local ANALYSED_BYTES = 256
-- Prefix occurrences counted at most (past them the estimate takes every position).
local MAX_OCCURRENCES = 1024
-- Item kinds of a parsed pattern (a flat array: kind, width, cheap-failure cost per item).
local K_CAP, K_END, K_SCAN, K_FRONT, K_ONE, K_OPT, K_STAR, K_PLUS, K_LAZY = 1, 2, 3, 4, 5, 6, 7, 8, 9
-- Added to K_STAR/K_LAZY/K_PLUS when the class is `.` (it matches every byte).
local K_ANY = 10
local str_match, str_format, str_char = string.match, string.format, string.char
-- one value only (a substitution's count is not wanted here)
local raw_gsub = string.gsub
local function gsub_orig(s, p, r)
  local out = raw_gsub(s, p, r)
  return out
end
-- Every byte; and each byte that is no letter or digit as it stands for itself in a set (NUL
-- as `%z`: LuaJIT ends a pattern at a NUL). Made by bound_patterns (untrusted states only).
local ALL_BYTES, SET_ESCAPE = nil, nil
local function make_byte_tables()
  local t, escape = {}, { ["\0"] = "%z" }
  for b = 0, 255 do
    local ch = str_char(b)
    t[b + 1] = ch
    if b > 0 and not find(ch, "^%w") then escape[ch] = "%" .. ch end
  end
  ALL_BYTES, SET_ESCAPE = table.concat(t), escape
end

-- The index of the `]` closing the set that opens at `i` (LuaJIT's rules: a `]` right after
-- `[` or `[^` belongs to the set, `%` escapes the next byte); #p when it is not closed.
local function set_end(p, i)
  local m = #p
  local j = i + 1
  if byte(p, j) == 94 then j = j + 1 end
  repeat
    if j > m then return m end
    local ch = byte(p, j)
    j = j + 1
    if ch == 37 and j <= m then j = j + 1 end
  until byte(p, j) == 93
  return j
end

-- The bytes class `cls` (a single-byte pattern item: `x`, `%x`, `.`, `[set]`) matches, by two
-- substitutions over all 256 bytes (the second removes every byte the first left).
local members_memo, members_count = {}, 0
local function members_of(cls)
  local have = members_memo[cls]
  if have == nil then
    local others = gsub_orig(ALL_BYTES, cls, "")
    if others == "" then
      have = ALL_BYTES
    else
      have = gsub_orig(ALL_BYTES, "[" .. gsub_orig(others, "%W", SET_ESCAPE) .. "]", "")
    end
    if members_count >= 256 then members_memo, members_count = {}, 0 end
    members_memo[cls] = have
    members_count = members_count + 1
  end
  return have
end

-- For each backtracking item (`*`, `+`, `-`) whose class no byte of the rest's possible first
-- bytes belongs to, the cost of an attempt of the rest that fails at once (stored as the item's
-- third field; 0: no such bound). Backtracking such an item is cheap: the rest cannot start
-- inside the run the item matched.
local function mark_disjoint(items, classes)
  local count = #items / 3
  for k = 1, count do
    local kind = items[3 * k - 2]
    if kind > K_ANY then kind = kind - K_ANY end
    local cls = classes[k]
    if (kind == K_STAR or kind == K_PLUS or kind == K_LAZY) and items[3 * k - 2] < K_ANY and cls then
      local pf, ok, j = 0, true, k + 1
      while j <= count do
        local kj = items[3 * j - 2]
        if kj > K_ANY then kj = kj - K_ANY end
        pf = pf + items[3 * j - 1]
        if kj == K_END then break end
        if kj ~= K_CAP then
          local cj = classes[j]
          if not cj or kj == K_FRONT or find(members_of(cj), cls) ~= nil then
            ok = false
            break
          end
          if kj == K_ONE or kj == K_PLUS or kj == K_SCAN then break end
        end
        j = j + 1
      end
      -- a rest that can match the empty string cannot fail: nothing to bound
      if ok and j <= count then items[3 * k] = pf + 1 end
    end
  end
end

-- The items of pattern `p` as a flat array {kind, width, cheap-failure cost, ...} and whether
-- it is anchored (`anchor`: the function reads a leading `^` as an anchor; gmatch reads it as
-- a byte). A malformed pattern parses to something: the matcher raises its error when it
-- gets there.
local function parse_pattern(p, anchor)
  local items, k, m, i = {}, 0, #p, 1
  local analyse = m <= ANALYSED_BYTES
  local classes = analyse and {} or nil
  local anchored = false
  if anchor and byte(p, 1) == 94 then anchored, i = true, 2 end
  while i <= m do
    local c = byte(p, i)
    local kind, w, cls = K_ONE, 1, nil
    local nxt = byte(p, i + 1)
    if c == 40 then  -- "(" or the position capture "()"
      kind = K_CAP
      i = i + (nxt == 41 and 2 or 1)
    elseif c == 41 then
      kind = K_CAP
      i = i + 1
    elseif c == 36 and i == m then
      kind = K_END
      i = i + 1
    elseif c == 37 and nxt == 98 then  -- %bxy: a scan to the balancing byte
      kind = K_SCAN
      if analyse and i + 2 <= m then
        cls = sub(p, i + 2, i + 2)
        if not find(cls, "^%w") then cls = "%" .. cls end
      end
      i = i + 4
    elseif c == 37 and nxt ~= nil and nxt >= 48 and nxt <= 57 then  -- %1-%9: a compare
      kind = K_SCAN
      i = i + 2
    elseif c == 37 and nxt == 102 then  -- %f[set]
      local j = byte(p, i + 2) == 91 and set_end(p, i + 2) or i + 1
      kind, w = K_FRONT, j - i + 1
      i = j + 1
    else
      local j = i
      if c == 37 then j = i + 1 elseif c == 91 then j = set_end(p, i) end
      w = j - i + 1
      if analyse and j <= m and (c ~= 91 or byte(p, j) == 93) then
        cls = sub(p, i, j)
        -- a byte that is special in a pattern (a `^` of gmatch, a `$` inside) stands for itself
        if j == i and c ~= 46 and not find(cls, "^%w") then cls = "%" .. cls end
      end
      i = j + 1
      local q = byte(p, i)
      if q == 63 then kind = K_OPT
      elseif q == 42 then kind = K_STAR
      elseif q == 43 then kind = K_PLUS
      elseif q == 45 then kind = K_LAZY end
      if kind ~= K_ONE then
        i = i + 1
        if c == 46 and kind ~= K_OPT then kind = kind + K_ANY end
      end
    end
    items[k + 1], items[k + 2], items[k + 3] = kind, w, 0
    k = k + 3
    if analyse then classes[k / 3] = cls or false end
  end
  if analyse then
    mark_disjoint(items, classes)
    items.classes = classes
  end
  -- the leading bytes that match only themselves (a byte before a quantifier does not)
  local lit = str_match(p, "^[^%^%$%*%+%?%.%(%)%[%%%-]+")
  if lit ~= nil and find(p, "^[%*%+%-%?]", #lit + 1) then lit = sub(lit, 1, -2) end
  items.prefix = lit or ""
  -- the analysis itself: about two passes over the 256 bytes per item
  items.work = analyse and 512 * (k / 3) or 0
  return items, anchored
end

-- The estimated worst-case steps of one call over a subject of `n` bytes. Walking the items
-- from the end, (c, e) are the worst costs of one attempt of the rest of the pattern at one
-- position, of any attempt and of a failing one (false: the rest cannot fail), `clin` is c
-- with the expansion of a greedy item whose rest cannot fail counted once (that expansion is
-- consumed by the match), `null` whether the rest matches the empty string at the subject's end.
-- A backtracking item multiplies the cost of the rest by the positions it tries, so the
-- estimate is about n^(k+1) for k backtracking items whose rest can fail, unless the rest
-- cannot start inside the item's run (`%w+%s*=`), which keeps it linear.
-- `occ`: an unanchored pattern starting with the literal `items.prefix` is tried past its
-- first bytes only where that prefix occurs, at most `occ` times (nil: at every position).
-- `runs[i]`: the longest run of item i's class in the subject (nil: the subject's length); a
-- greedy or lazy item covers at most that many bytes.
local function pattern_cost(items, anchored, n, scan, occ, runs)
  local c, clin, e, null, wsum = 1, 1, false, true, 0
  local i = #items / 3 + 1
  for k = #items - 2, 1, -3 do
    i = i - 1
    local N = runs and runs[i] and runs[i] + 1 or n + 1
    local kind, w, pf = items[k], items[k + 1], items[k + 2]
    local any = kind > K_ANY
    if any then kind = kind - K_ANY end
    wsum = wsum + w
    if kind == K_CAP then
      c, clin = c + 1, clin + 1
      if e then e = e + 1 end
    elseif kind == K_END then
      c, clin, e, null = 1, 1, 1, true
    elseif kind == K_SCAN or kind == K_FRONT or kind == K_ONE then
      if kind == K_SCAN then w = n + 1 end
      c, clin, e, null = w + c, w + clin, w + (e or 0), false
    elseif kind == K_OPT then
      if e then c, clin, e = w + e + c, w + e + clin, w + 2 * e else c, clin = w + c, w + clin end
    elseif kind == K_STAR or kind == K_PLUS then
      local ex = w * N
      if not e or (any and null) then
        -- the longest expansion is tried first and the rest matches there
        c, clin = ex + c, w + clin
        e = kind == K_PLUS and w
      elseif pf > 0 then
        -- the rest is tried in full where the run ends, and fails at once inside it
        local t = ex + N * pf
        c, clin, e = t + c, t + clin, t + e
      else
        c, clin, e = ex + N * e + c, ex + N * e + clin, ex + N * e
      end
      if kind == K_PLUS then null = false end
    else  -- K_LAZY: the rest is tried at each position the item reaches
      if e then
        local t = N * ((pf > 0 and pf or e) + w)
        c, clin = t + c, t + clin
        if any and null then e = false else e = t + e end
      end
    end
  end
  local cost
  local N = n + 1
  if anchored then
    cost = c
  else
    local tries, skip = N, 0
    if occ ~= nil then tries, skip = occ, N * #items.prefix end
    -- find/match stop at the first match; gmatch/gsub go on after each one
    if not scan then cost = skip + tries * (e or 0) + c
    else cost = skip + tries * max(e or 0, clin) + n * wsum end
  end
  return cost
end

-- runs[i] for pattern_cost: a bound (within a factor of 2) of the longest run in `s` of the
-- class of each greedy or lazy item, found by searching for runs of 16, 32, ... bytes while that
-- search costs little; and the matcher steps the searches took.
local raw_rep = string.rep
local function class_runs(items, s)
  local classes, n = items.classes, #s
  local runs, work, seen = {}, 0, {}
  for i = 1, #classes do
    local kind, cls = items[3 * i - 2], classes[i]
    if cls and (kind == K_STAR or kind == K_PLUS or kind == K_LAZY) then
      local bound = seen[cls]
      if bound == nil then
        bound = false
        local len = 16
        while (n + 1) * len * #cls <= PATTERN_LIMIT / 8 do
          work = work + (n + 1) * len * #cls
          if find(s, raw_rep(cls, len)) == nil then
            bound = len - 1
            break
          end
          len = len * 2
        end
        seen[cls] = bound
      end
      if bound then runs[i] = bound end
    end
  end
  return runs, work
end

local function bound_patterns()
  make_byte_tables()
  local S = G.string
  local find, match, gmatch, gsub = S.find, S.match, S.gmatch, S.gsub
  local str_type, num_text, fmt, err = type, tostring, str_format, error
  local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"
  -- Parsed patterns of recent calls ([true]: anchored ones), dropped when it grows.
  local parsed, nparsed = { [true] = {}, [false] = {} }, 0

  -- Fails the call when its estimate is over the limit, else charges it to the budget.
  local function charge(name, cost, n)
    if not (cost <= PATTERN_LIMIT) then  -- NaN included
      err(fmt("pattern limit exceeded: string.%s with this pattern over %d bytes may take about %.3g " ..
        "matcher steps, more than the %d untrusted mode allows", name, n, cost, PATTERN_LIMIT), 4)
    end
    if charge_budget(cost) then err(LIMIT_TEXT, 0) end
  end

  -- Checks one call of `name` on subject `s` and pattern `p` (a call the original refuses for
  -- its argument types is left to it). `anchor`: `^` anchors; `scan`: gmatch/gsub.
  local function check(name, s, p, anchor, scan, plain)
    local ts, tp = str_type(s), str_type(p)
    if (ts ~= "string" and ts ~= "number") or (tp ~= "string" and tp ~= "number") then return end
    if ts == "number" then s = num_text(s) end
    if tp == "number" then p = num_text(p) end
    local n, m = #s, #p
    if name == "find" and (plain or not find(p, SPECIALS)) then
      if m > 1 and n >= m then charge(name, (n - m + 1) * m / PLAIN_BYTES_PER_STEP, n) end
      return
    end
    -- every byte of a pattern costs at least a step: no parse of one far over the limit
    if m > MAX_PATTERN_BYTES then charge(name, m * (PATTERN_LIMIT / MAX_PATTERN_BYTES), n) end
    local cache = parsed[anchor]
    local items = cache[p]
    local anchored, fresh = false, 0
    if items == nil then
      items, anchored = parse_pattern(p, anchor)
      fresh = items.work
      if m <= ANALYSED_BYTES then
        if nparsed >= 256 then parsed, nparsed = { [true] = {}, [false] = {} }, 0 end
        parsed[anchor][p] = items
        nparsed = nparsed + 1
      end
    else
      anchored = anchor and byte(p, 1) == 94
    end
    local occ = nil
    local prefix = items.prefix
    -- (counting searches the subject for the prefix: no more work than the matcher's own)
    if not anchored and prefix ~= "" and (n + 1) * #prefix <= PATTERN_LIMIT then
      occ = 0
      local at = find(s, prefix, 1, true)
      while at ~= nil do
        occ = occ + 1
        if occ > MAX_OCCURRENCES then
          occ = nil
          break
        end
        at = find(s, prefix, at + 1, true)
      end
    end
    local cost = pattern_cost(items, anchored, n, scan, occ)
    if cost > PATTERN_LIMIT and items.classes then
      -- the worst case over this subject's runs of each class, not over any subject
      local runs, work = class_runs(items, s)
      cost = pattern_cost(items, anchored, n, scan, occ, runs) + work
    end
    charge(name, cost + fresh, n)
  end

  local wrapped = {}
  wrapped[find] = function(s, p, init, plain)
    check("find", s, p, true, false, plain)
    return find(s, p, init, plain)
  end
  wrapped[match] = function(s, p, init)
    check("match", s, p, true, false)
    return match(s, p, init)
  end
  wrapped[gmatch] = function(s, p)
    check("gmatch", s, p, false, true)
    return gmatch(s, p)
  end
  wrapped[gsub] = function(s, p, repl, limit)
    check("gsub", s, p, true, true)
    return gsub(s, p, repl, limit)
  end
  -- every name the string table holds them under (aliases included)
  for name, f in pairs(S) do
    local w = wrapped[f]
    if w ~= nil then S[name] = w end
  end
end

-- Modules an untrusted bundle finds already loaded (os, io, debug, jit.util, jit.profile and
-- the preloaded C modules are not among them).
local UNTRUSTED_LOADED = { "_G", "string", "table", "math", "coroutine", "bit", "jit", "jit.opt" }

-- A module name an untrusted `require` accepts: dot-separated parts of letters, digits, `_`
-- and `-`, so the file it names is lexically inside the directory searched.
local gmatch, gsub = string.gmatch, string.gsub
local function module_path(name)
  if type(name) ~= "string" or name == "" or #name > 200 then return nil end
  for part in gmatch(name .. ".", "(.-)%.") do
    if not find(part, "^[%w_%-]+$") then return nil end
  end
  return (gsub(name, "%.", "/"))
end

-- The `require` of an untrusted bundle (see P.harden): it finds modules in its own loaded
-- table, its own preload table, then as source files inside `roots` (real directories, the
-- bundle's first), whose real path (symlinks resolved) must stay inside that root. Bytecode
-- is refused. Nothing the bundle can reach changes where it looks.
local function closed_require(roots, realpath, open, loaded, preload)
  local concat, error, tostring = table.concat, error, tostring
  local LOADING = {}  -- marks a module whose chunk is running (a require loop)
  local pathbuf = ffi.new("char[4097]")
  local function real(path)
    local p = realpath(path, pathbuf)
    if p == nil then return nil end
    return ffi.string(p)
  end
  local function search(name)
    local rel = module_path(name)
    if rel == nil then return nil, "\n\tinvalid module name (untrusted mode: letters, digits, '_', '-', '.')" end
    local tried = {}
    for _, root in ipairs(roots) do
      for _, suffix in ipairs(root.suffixes) do
        local candidate = root.dir .. "/" .. rel .. suffix
        local r = real(candidate)
        if r ~= nil and sub(r, 1, #root.dir + 1) == root.dir .. "/" then
          local f = open(r, "rb")
          if f ~= nil then
            local text = f:read("*a")
            f:close()
            if type(text) == "string" then return text, candidate end
          end
        end
        tried[#tried + 1] = "\n\tno file '" .. candidate .. "'"
      end
    end
    return nil, concat(tried)
  end
  return function(name)
    local have = loaded[name]
    if have == LOADING then error("loop or previous error loading module '" .. tostring(name) .. "'", 2) end
    if have ~= nil then return have end
    local chunk
    local pre = preload[name]
    if pre ~= nil then
      chunk = pre
    else
      local text, path = search(name)
      if text == nil then
        error("module '" .. tostring(name) .. "' not found:\n\tno field package.preload['" .. tostring(name) ..
          "']" .. path, 2)
      end
      if byte(text, 1) == 27 then
        error("error loading module '" .. name .. "' from file '" .. path ..
          "':\n\tprecompiled bytecode is refused in untrusted mode", 2)
      end
      local f, err = G_load(text, "@" .. path, "t")
      if f == nil then
        error("error loading module '" .. name .. "' from file '" .. path .. "':\n\t" .. tostring(err), 2)
      end
      chunk = f
    end
    -- As the standard require: a chunk that fails leaves the mark (a later require of the
    -- name reports the earlier error).
    loaded[name] = LOADING
    local res = chunk(name)
    if res ~= nil then loaded[name] = res end
    if loaded[name] == LOADING then loaded[name] = true end
    return loaded[name]
  end
end

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

-- getfenv/setfenv as bundle code sees them under a budget or in untrusted mode: they never hand
-- out or change the environment of a function of luaplug's (HOST_ENV). In untrusted mode they
-- also take only a function or level 0/1 (getfenv) / 1 (setfenv): deeper levels would name
-- luaplug's frames, which bundle code must not touch.
local function guard_fenv(untrusted)
  G.getfenv = function(f)
    if untrusted and type(f) ~= "function" and f ~= nil then
      local level = tonumber(f)
      if level ~= 0 and level ~= 1 then error("untrusted mode: getfenv takes a function or level 0/1", 2) end
    end
    local env = raw_getfenv(fenv_target(f))
    if env == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    return env
  end
  G.setfenv = function(f, t)
    if untrusted and type(f) ~= "function" and tonumber(f) ~= 1 then
      error("untrusted mode: setfenv takes a function or level 1", 2)
    end
    local target = fenv_target(f)
    if raw_getfenv(target) == HOST_ENV then error(HOST_FUNCTION_TEXT, 2) end
    local r = raw_setfenv(target, t)
    return r
  end
end

-- The instruction budget must hold against the bundle: it cannot reach the
-- hook, the exemption of luaplug's frames (HOST_ENV) or the functions that
-- arm it, and an error handler of its own never runs past the budget.
local function guard_budget(dbg)
  local raw_getupvalue, raw_setupvalue = dbg.getupvalue, dbg.setupvalue
  local raw_upvalueid, raw_upvaluejoin = dbg.upvalueid, dbg.upvaluejoin
  local raw_dgetfenv, raw_dsetfenv = dbg.getfenv, dbg.setfenv
  local raw_getlocal, raw_setlocal, raw_getinfo = dbg.getlocal, dbg.setlocal, getinfo
  G.xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then return xpcall(f, handler, ...) end
    -- Past the budget the handler would run with hooks off (LuaJIT calls it
    -- inside the hook that raised the error): the error goes back unhandled.
    return xpcall(f, function(e)
      if over_budget() then return e end
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
--- `untrusted` ~= 0: the bundle's globals lose os, io, debug, dofile/loadfile, module,
--- newproxy, bytecode loading, C modules and ffi, and get a closed `require` (see docs:
--- untrusted mode) over `bundle_dir` (a real path, "" for none) and `sdk_dir`;
--- `realpath_fn` is the address of the C library's realpath(3).
function P.harden(limit, untrusted, bundle_dir, sdk_dir, realpath_fn)
  local jit = G_require("jit")
  if limit ~= nil and limit > 0 then
    set_budget(limit)
    jit.off()
    jit.flush()
    -- The budget relies on the interpreter and on owning the hook.
    jit.on = function() end
    guard_budget(G.debug or {})
  end
  local confined = untrusted ~= nil and untrusted ~= 0
  if (limit ~= nil and limit > 0) or confined then guard_fenv(confined) end
  if not confined then return end
  local real_package = G.package
  local real_loaded, real_preload = real_package.loaded, real_package.preload
  local open = G.io.open
  jit.util, jit.attach = nil, nil
  -- The bundle's own module tables: the real ones (reachable from the C `require`,
  -- `module` and the registry) keep the full ffi, debug, io, os and C loaders.
  local loaded, preload = {}, {}
  for _, name in ipairs(UNTRUSTED_LOADED) do loaded[name] = real_loaded[name] end
  local roots, shown = {}, {}
  if bundle_dir ~= nil and bundle_dir ~= "" then
    roots[#roots + 1] = { dir = bundle_dir, suffixes = { ".lua", ".init.lua" } }
    shown[#shown + 1] = bundle_dir .. "/?.lua;" .. bundle_dir .. "/?.init.lua"
  end
  if sdk_dir ~= nil and sdk_dir ~= "" then
    roots[#roots + 1] = { dir = sdk_dir, suffixes = { ".lua" } }
    shown[#shown + 1] = sdk_dir .. "/?.lua"
  end
  local realpath = ffi.cast("char *(*)(const char *, char *)", realpath_fn)
  -- A view: writing `path`, `cpath` or `loaders` changes nothing `require` does.
  local package = {
    loaded = loaded, preload = preload, path = table.concat(shown, ";"), cpath = "",
    config = real_package.config, loaders = {},
  }
  loaded.package = package
  for _, name in ipairs({ "os", "io", "debug" }) do G[name] = nil end
  -- lupa looks `debug` (for its traceback) up in the globals on its own call path, outside a
  -- protected call: the name must stay interned (kept here), or a full heap fails the lookup.
  P.kept_names = { "debug", "traceback" }
  G.dofile, G.loadfile, G.module = nil, nil, nil
  -- Source text only: a chunk given as bytecode fails to load.
  G.load = function(chunk, name, _mode, env) return G_load(chunk, name, "t", env) end
  G.loadstring = function(s, name) return G_load(s, name, "t") end
  -- No finalizers: LuaJIT runs them with hooks off (outside any budget), at any allocation
  -- and when the VM closes. (ffi.gc and ffi.metatype's __gc are out of reach: no ffi.)
  G.newproxy = nil
  G.package = package
  G.require = closed_require(roots, realpath, open, loaded, preload)
  -- Defence in depth: what is left of the real tables holds no ffi or C loader either.
  for name in pairs(real_preload) do real_preload[name] = nil end
  real_loaded.ffi, real_loaded.debug, real_loaded.io, real_loaded.os = nil, nil, nil, nil
  hide_addresses()
  bound_patterns()
  real_loaded["jit.util"], real_loaded["jit.profile"] = nil, nil
  real_package.loadlib, real_package.cpath, real_package.path = nil, "", ""
  local loaders = real_package.loaders
  for i = #loaders, 1, -1 do loaders[i] = nil end
end


-- == Value protocol (untrusted bundles) =========================================================
-- An untrusted bundle has no ffi and never holds an address. P.values compiles luaplug's value
-- glue (generated from the bundle's api.toml by luaplug.typed.valueglue) with the real ffi, in
-- an environment of its own, and keeps it here: nothing below is reachable from bundle code.
-- The bundle's polyplug_init(host) gets `host_obj` (log, contract callers) and returns
-- { ["name@major"] = factory }, status; factory(host) builds an impl whose methods take and
-- return Lua values (numbers, booleans, strings).

local VALUE_CDEF = [[
typedef struct luaplug_v_sv { const uint8_t* ptr; size_t len; } luaplug_v_sv;
typedef struct luaplug_v_err { uint32_t code; luaplug_v_sv message; } luaplug_v_err;
typedef struct luaplug_v_inst { void* data; uint64_t contract_id; } luaplug_v_inst;
typedef struct luaplug_v_handle { uint32_t index; uint32_t generation; } luaplug_v_handle;
typedef struct luaplug_v_block { struct luaplug_v_block* next; size_t cap; size_t used; } luaplug_v_block;
typedef struct luaplug_v_arena {
  uint8_t* cur; uint8_t* lim; uint8_t* base; const void* host; luaplug_v_block* first;
} luaplug_v_arena;
typedef struct luaplug_v_ld { void* data; } luaplug_v_ld;
typedef struct luaplug_v_version { uint32_t major; uint32_t minor; uint32_t patch; } luaplug_v_version;
typedef struct luaplug_v_native { uint32_t function_count; void* const* functions; } luaplug_v_native;
typedef struct luaplug_v_vm {
  void (*call)(luaplug_v_ld, luaplug_v_inst, uint32_t, const void*, void*, luaplug_v_arena*, luaplug_v_err*);
  luaplug_v_ld loader_data;
} luaplug_v_vm;
typedef union luaplug_v_dispatch { luaplug_v_native native; luaplug_v_vm vm; } luaplug_v_dispatch;
typedef struct luaplug_v_giface {
  uint64_t contract_id; luaplug_v_version contract_version; uint32_t dispatch_type;
  void* create_instance; void* destroy_instance; luaplug_v_dispatch dispatch;
} luaplug_v_giface;
typedef struct luaplug_v_hinst { void* data; } luaplug_v_hinst;
typedef struct luaplug_v_hiface {
  uint64_t contract_id; luaplug_v_version contract_version; bool singleton; uint32_t dispatch_type;
  void* runtime; void* user_data; void* create_instance; void* destroy_instance; luaplug_v_dispatch dispatch;
} luaplug_v_hiface;
typedef struct luaplug_v_host {
  void* runtime; void* register_guest_contract;
  uint8_t* (*alloc)(const struct luaplug_v_host*, size_t, size_t);
  void (*free)(const struct luaplug_v_host*, uint8_t*, size_t, size_t);
  luaplug_v_handle (*find_guest_contract)(const struct luaplug_v_host*, uint64_t, uint32_t);
  void* find_all_guest_contracts;
  const luaplug_v_giface* (*resolve_guest_contract)(const struct luaplug_v_host*, luaplug_v_handle);
  luaplug_v_hinst (*get_host_contract)(const struct luaplug_v_host*, uint64_t, uint32_t);
  const luaplug_v_hiface* (*resolve_host_contract_interface)(const struct luaplug_v_host*, uint64_t, uint32_t);
  void* list_bundles; void* get_dependencies; void* load_bundle; void* reload_bundle;
  void* register_host_contract; void* register_loader; void* get_last_error; void* get_error_len;
  void* unload_bundle;
  void (*log)(const struct luaplug_v_host*, uint32_t, luaplug_v_sv, luaplug_v_sv);
  void (*create_guest_instance)(const struct luaplug_v_host*, const luaplug_v_giface*, const void*, luaplug_v_inst*);
  void* destroy_guest_instance;
  const uint64_t* (*revision_counter)(const struct luaplug_v_host*);
  void* reserved;
} luaplug_v_host;
typedef void (*luaplug_v_gfn)(luaplug_v_inst, const void*, void*, luaplug_v_err*);
typedef void (*luaplug_v_hfn)(void*, const void*, void*, luaplug_v_err*);
]]

-- Captured now: bundle code may rewrite its globals and the string table before any call.
local setmetatable, tostring_, error_, pcall_ = setmetatable, tostring, error, pcall
local setfenv_, format, match, gsub_ = setfenv, string.format, string.match, string.gsub
local sort, concat = table.sort, table.concat
local error = error_
local u8p = nil
-- The value protocol of this state (set by P.values), shared with the prelude through set_value.
local value = nil

local function vdescribe(v)
  local t = type(v)
  if t == "string" then return format("string %q", v) end
  if t == "number" or t == "boolean" then return t .. " " .. tostring_(v) end
  return t
end

local function value_fail(what, expected, v)
  error(what .. ": expected " .. expected .. ", got " .. vdescribe(v), 0)
end

local function dec_str(sv)
  local n = tonumber(sv.len)
  if n == 0 then return "" end
  if sv.ptr == nil then error("a StringView with a null pointer and length " .. n, 0) end
  local s = ffi.string(sv.ptr, n)
  return s
end

local core = {
  tonumber = tonumber, error = error, dec_str = dec_str,
  enc_int = function(v, lo, hi, what)
    -- hi is exclusive: 2^bits bounds are exact doubles
    if type(v) ~= "number" or v ~= floor(v) or v < lo or v >= hi then
      value_fail(what, "an integer in [" .. format("%.0f", lo) .. ", " .. format("%.0f", hi) .. ")", v)
    end
    return v
  end,
  enc_float = function(v, what)
    if type(v) ~= "number" then value_fail(what, "a number", v) end
    return v
  end,
  enc_bool = function(v, what)
    if type(v) ~= "boolean" then value_fail(what, "a boolean", v) end
    return v
  end,
  enc_str_check = function(v, what)
    if type(v) ~= "string" then value_fail(what, "a string", v) end
    return v
  end,
  -- A string result into the call arena (alloc: the dispatcher's arena allocator).
  write_str = function(sv, s, arena, alloc)
    local n = #s
    if n == 0 then
      sv.ptr, sv.len = nil, 0
      return
    end
    local p = tonumber(alloc(n, arena)) or 0
    if p == 0 then error("arena allocation failed (" .. n .. " bytes)", 0) end
    local dst = ffi.cast(u8p, p)
    ffi.copy(dst, s, n)
    sv.ptr, sv.len = dst, n
  end,
  invoke = function(impl, name, ...)
    if impl == nil then error("the contract's factory built no implementation (nil)", 0) end
    local f = impl[name]
    if type(f) ~= "function" then error("the implementation has no method '" .. name .. "'", 0) end
    local r = f(impl, ...)
    return r
  end,
}

-- The host object and the callers are plain tables of functions (no metatable): everything in
-- them can be enumerated, and a bundle that rewrites them changes only its own view.
-- Caller state per caller object (weak keys): the interface and instance cdata live only here.
local caller_state = setmetatable({}, { __mode = "k" })
core.state_of = function(obj)
  local st = caller_state[obj]
  if st == nil then error("call a contract method as caller:method(...)", 3) end
  return st
end

local vhost = nil  -- the HostApi as luaplug_v_host*

-- The provider was reloaded or unloaded since the caller resolved it: resolve again.
local function refresh(st)
  if st.kind ~= "guest" then return end
  local rev = st.rev_ptr ~= nil and st.rev_ptr[0] or nil
  if st.iface ~= nil and rev == st.rev then return end
  local iface = vhost.resolve_guest_contract(vhost, st.handle)
  if iface == nil then
    st.iface = nil
    return
  end
  local inst = ffi.new("luaplug_v_inst")
  vhost.create_guest_instance(vhost, iface, nil, inst)
  st.iface, st.inst, st.rev = iface, inst, rev
end

local function free_blocks(arena)
  local b = arena.first
  while b ~= nil do
    local nxt = b.next
    vhost.free(vhost, ffi.cast(u8p, b), b.cap, 8)
    b = nxt
  end
  arena.first = nil
end

-- One call through the HostApi: (value) on success (true for a function without a result),
-- (nil, message) on failure. Results are copied out of the call arena before it is freed.
core.call = function(st, fn_id, args, out, decode)
  refresh(st)
  local iface = st.iface
  if iface == nil then return nil, st.key .. " is not available" end
  local arena = ffi.new("luaplug_v_arena")
  arena.host = vhost
  local err = ffi.new("luaplug_v_err")
  local d = iface.dispatch
  if iface.dispatch_type == 0 then
    if fn_id >= d.native.function_count or d.native.functions == nil or d.native.functions[fn_id] == nil then
      return nil, st.key .. ": no function " .. fn_id
    end
    if st.kind == "guest" then
      ffi.cast("luaplug_v_gfn", d.native.functions[fn_id])(st.inst, args, out, err)
    else
      ffi.cast("luaplug_v_hfn", d.native.functions[fn_id])(st.inst.data, args, out, err)
    end
  elseif iface.dispatch_type == 1 then
    local inst = st.inst
    if st.kind ~= "guest" then inst = ffi.new("luaplug_v_inst") end
    d.vm.call(d.vm.loader_data, inst, fn_id, args, out, arena, err)
  else
    return nil, st.key .. ": unknown dispatch type"
  end
  local code = tonumber(err.code)
  local ok, v = true, true
  if code ~= 0 then
    local text = ""
    if err.message.ptr ~= nil and err.message.len > 0 then
      -- the provider's text may show addresses (a Lua object's, a Python repr's): not here
      text = ": " .. gsub_(dec_str(err.message), "0[xX]%x+", "0x?")
    end
    ok, v = false, st.key .. " call failed with code " .. code .. text
  elseif decode ~= nil then
    ok, v = pcall_(decode, out)
  end
  free_blocks(arena)
  if not ok then return nil, v end
  return v
end

local LOG_TEXT = "host:log(level, target, message): level 1-5, target and message strings"
local function make_host_obj(glue)
  local methods, callers = {}, {}
  function methods.log(_, level, target, message)
    if type(level) ~= "number" or level < 1 or level > 5 or level % 1 ~= 0 then error(LOG_TEXT, 2) end
    if type(target) == "number" then target = tostring_(target) end
    if type(message) == "number" then message = tostring_(message) end
    if type(target) ~= "string" or type(message) ~= "string" then error(LOG_TEXT, 2) end
    if vhost == nil or vhost.log == nil then return end
    vhost.log(vhost, level, ffi.new("luaplug_v_sv", target, #target), ffi.new("luaplug_v_sv", message, #message))
  end
  -- host:contract("name@major"): a caller of a contract of the bundle's api.toml, or nil and why.
  function methods.contract(_, key)
    if type(key) ~= "string" then error("host:contract(key): key is \"name@major\"", 2) end
    local have = callers[key]
    if have ~= nil then return have end
    local id, m = glue.ids[key], glue.callers[key]
    if id == nil or m == nil then return nil, key .. " is not declared in the bundle's api.toml" end
    if vhost == nil then return nil, "no host" end
    local st = { key = key, kind = id[1] }
    if id[1] == "guest" then
      st.handle = vhost.find_guest_contract(vhost, id[2], id[3])
      if vhost.revision_counter ~= nil then
        local p = vhost.revision_counter(vhost)
        if p ~= nil then st.rev_ptr = p end
      end
      refresh(st)
    else
      st.iface = vhost.resolve_host_contract_interface(vhost, id[2], 0)
      if st.iface ~= nil then st.inst = vhost.get_host_contract(vhost, id[2], 0) end
    end
    if st.iface == nil then return nil, key .. " is not available" end
    local obj = {}
    for name, f in pairs(m) do obj[name] = f end
    caller_state[obj] = st
    callers[key] = obj
    return obj
  end
  return methods
end

local function read_value_entry(key, factory, chunk)
  if type(key) ~= "string" or value.glue.handlers[key] == nil then
    local declared = {}
    for k in pairs(value.glue.handlers) do declared[#declared + 1] = k end
    sort(declared)
    return nil, "undeclared", vdescribe(key), concat(declared, ", ")
  end
  if type(factory) ~= "function" then return nil, "value_entry", key, vdescribe(factory) end
  local name, major = match(key, "^(.*)@(%d+)$")
  local fns, n = value.glue.handlers[key], 0
  while fns[n] ~= nil do n = n + 1 end
  local host_obj = value.host_obj
  return {
    name = name, version = tonumber(major), plugin = chunk, fns = fns, n = n,
    factory = function() return factory(host_obj) end,
  }
end

--- Switch this state to the value protocol (untrusted mode): compile the value glue of the
--- bundle's api.toml (`len` bytes of text at address `addr`, copied into the VM here, inside a
--- protected call, so a glue over the memory cap fails cleanly) outside the bundle's environment.
function P.values(addr, len)
  local glue_src = ffi.string(ffi.cast("const char*", addr), len)
  if u8p == nil then
    ffi.cdef(VALUE_CDEF)
    u8p = ffi.typeof("uint8_t*")
  end
  local host_num = host_address()
  if host_num ~= 0 then vhost = ffi.cast("const luaplug_v_host*", host_num) end
  local f, err = G_load(glue_src, "=luaplug_glue", "t")
  if f == nil then error("value glue: " .. tostring(err), 0) end
  -- The glue reads no global (everything arrives as upvalues): a global read is a bug, loudly.
  setfenv_(f, setmetatable({}, {
    __metatable = false,
    __index = function(_, k) error("value glue: no global " .. tostring_(k), 2) end,
    __newindex = function() error("read-only", 2) end,
  }))
  local glue = f(ffi, core)
  value = { glue = glue }
  value.host_obj = make_host_obj(glue)
  set_value(value, read_value_entry)
end
