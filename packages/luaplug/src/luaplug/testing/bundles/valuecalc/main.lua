-- value.Calc@1 in untrusted mode: methods take and return Lua values; luaplug's glue does the ABI.
-- Every value luaplug hands in is kept in `inputs`, for probe() to search for a way to an address.
local inputs = {}
local function seen(...)
  for i = 1, select("#", ...) do inputs[#inputs + 1] = (select(i, ...)) end
end

local Calc = {}
Calc.__index = Calc

function Calc:add(a, b) seen(a, b) return a + b end
function Calc:noop() end
function Calc:negate(x) seen(x) return -x end
function Calc:widen(a, b, c) seen(a, b, c) return a + b + c end
function Calc:scale(x, k) seen(x, k) return x * k end
function Calc:both(p, q) seen(p, q) return p and q end
function Calc:greet(name) seen(name) return "hello, " .. name end
function Calc:reverse(data, times) seen(data, times) return data:reverse():rep(times) end
local order = { [1] = 2, [2] = 4, [4] = 1 }
function Calc:next_color(c) seen(c) return order[c] or 0 end
function Calc:fail(message) error(message, 0) end
function Calc:bad_result() return "not a number" end

local function caller(key)
  local c, why = self_host:contract(key)
  seen(c, why)
  if c == nil then error(why, 0) end
  return c
end

function Calc:peer_add(a, b)
  local r, err = caller("typed.Calc@1"):add(a, b)
  seen(r, err)
  if r == nil then error(err, 0) end
  return r
end
function Calc:peer_greet(name)
  local r, err = caller("typed.Calc@1"):greet(name)
  seen(r, err)
  if r == nil then error(err, 0) end
  return r
end
function Calc:host_add(a, b)
  local r, err = caller("host.Math@1"):add(a, b)
  seen(r, err)
  if r == nil then error(err, 0) end
  return r
end
function Calc:host_greet(who)
  local r, err = caller("host.Math@1"):greet(who)
  seen(r, err)
  if r == nil then error(err, 0) end
  return r
end
function Calc:host_boom()
  local r, err = caller("host.Math@1"):boom()
  seen(r, err)
  return tostring(r) .. "|" .. tostring(err)
end

-- Everything reachable from the globals, the string metatable and every value handed in:
-- "SAFE <numbers>" (the numbers >= 2^16 found, for the host to compare with its addresses),
-- or "ESCAPED <what>".
function Calc:probe()
  local bad, numbers = nil, {}
  local seen_set, queue = {}, {}
  local function push(v) queue[#queue + 1] = v end
  push(_G) push(getmetatable("")) push(inputs) push(self) push(self_host)
  -- error objects and results of odd calls of every function handed in
  local function try(f, ...)
    local r = { pcall(f, ...) }
    for i = 1, table.maxn(r) do push(r[i]) end
  end
  for _, obj in ipairs({ self_host, caller("typed.Calc@1"), caller("host.Math@1") }) do
    for _, name in ipairs({ "log", "contract", "add", "greet", "boom", "noop", "negate" }) do
      local f = obj[name]
      if f ~= nil then
        push(f)
        try(f) try(f, obj) try(f, {}) try(f, obj, "x") try(f, obj, 1, 2) try(f, obj, 2 ^ 40, -1)
      end
    end
    try(function() obj.x = 1 end)
    push(getmetatable(obj))
  end
  -- stack levels of the glue that called this method
  for level = 0, 6 do try(getfenv, level) end
  try(setfenv, 2, {})
  -- coroutines: a method run in a coroutine, its status and results
  local co = coroutine.create(function() return self_host:contract("host.Math@1") end)
  try(coroutine.resume, co)
  -- the texts of objects: no heap address
  for _, v in ipairs({ self_host, self_host.log, coroutine.create(print), {}, print }) do
    try(tostring, v) try(string.format, "%s|%5s|%-3s", v, v, v) try(string.format, "%p", v)
  end
  try(require, "ffi") try(require, "polyplug_guest") try(require, "abi") try(require, "polyplug_abi")
  push(package.loaded.ffi) push(package.preload.ffi)
  local n = 0
  while #queue > 0 do
    local v = table.remove(queue)
    local t = type(v)
    if t == "cdata" or t == "userdata" then bad = bad or ("a " .. t .. " value") end
    if t == "number" and v >= 65536 and v < 2 ^ 63 and v == math.floor(v) then numbers[#numbers + 1] = ("%.0f"):format(v) end
    if t == "string" and v:find("cdata<", 1, true) then bad = bad or ("a cdata's text: " .. v) end
    if t == "string" and v:find("0[xX]%x%x%x%x%x%x") then bad = bad or ("an address in a text: " .. v) end
    if (t == "table" or t == "function" or t == "thread") and not seen_set[v] then
      seen_set[v] = true
      n = n + 1
      if t == "table" then
        for k, x in pairs(v) do push(k) push(x) end
        push(getmetatable(v))
      elseif t == "function" then
        local ok, env = pcall(getfenv, v)
        if ok then push(env) end
      end
    end
  end
  if bad then return "ESCAPED " .. bad end
  return "SAFE " .. n .. " " .. table.concat(numbers, ",")
end

function polyplug_init(host)
  self_host = host
  seen(host)
  host:log(3, "valuecalc", "ready")
  seen(pcall(host.log, host, 9, "valuecalc", "no such level"))
  return { ["value.Calc@1"] = function(h) seen(h) return setmetatable({}, Calc) end }, { code = 0 }
end
