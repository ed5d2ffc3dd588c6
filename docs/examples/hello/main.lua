-- The tutorial's bundle: plain Lua methods; contracts.lua (generated) does the ABI work.
local contracts = require("contracts")

local Greeter = {}
Greeter.__index = Greeter

function Greeter:greet(name)
  self.count = self.count + 1
  return "hello, " .. name .. "!"
end

function Greeter:greeted()
  return self.count
end

-- Called once for the default impl and once per instance a host creates.
contracts.set_hello_factory(function(_host_ptr)
  return setmetatable({ count = 0 }, Greeter)
end)

function polyplug_init(_host_ptr, _ctx_ptr)
  return contracts.register_hello(), { code = 0 }
end
