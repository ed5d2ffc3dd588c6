-- shapes.Counter@1 through glue from `luaplug codegen --bundle bundle.toml --out generated`.
local contracts = require("generated.guest.contracts")

local function new_counter(_host)
  local self = { total = 0 }
  function self:bump(by)
    self.total = self.total + tonumber(by)
    return self.total
  end
  function self:label() return "counter" end
  function self:add(a, b) return a + b end
  return self
end

contracts.set_counter_factory(new_counter)
return contracts
