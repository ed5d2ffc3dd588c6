-- typed.Calc@1, the author's side: plain Lua methods; contracts.lua (generated) does the ABI.
local contracts = require("contracts")
local Color = contracts.Color

local Calc = {}
Calc.__index = Calc

function Calc:add(a, b) return a + b end
function Calc:noop() end
function Calc:negate(x) return -x end
function Calc:greet(name) return "hello, " .. name end
function Calc:widen(a, b, c) return a + b + c end
function Calc:mix(a, b, c, d) return a + b + c + d end
function Calc:scale(x, k) return x * k end
function Calc:half(x) return x / 2 end
function Calc:both(p, q) return p and q end

local order = { [Color.Red] = Color.Green, [Color.Green] = Color.Blue, [Color.Blue] = Color.Red }
function Calc:next_color(c) return order[c] or 0 end

function Calc:describe(tag, n, flag, color)
  return string.format("%s:%d:%s:%d", tag, n, tostring(flag), color)
end

function Calc:count()
  self.calls = self.calls + 1
  return self.calls
end

function Calc:fail(message) error(message) end

contracts.set_typed_calc_factory(function(_host)
  return setmetatable({ calls = 0 }, Calc)
end)

function polyplug_init(_host, _ctx)
  return contracts.register_typed_calc(), { code = 0 }
end
