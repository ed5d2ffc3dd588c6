-- iso.Chatty@1 fn 0 speak(): logs one Info line (scope "iso.chatty") while it runs.
-- iso.Quiet@1 fn 0 noop(). A host log handler may call back into either (re-entry tests).
local guest = require("polyplug_guest")

function polyplug_init(_host, _ctx)
  return {
    ["iso.Chatty"] = {
      factory = function(h) return { host = h } end,
      functions = { [0] = function(self) guest.log(self.host, guest.LogLevel.Info, "iso.chatty", "speaking") end },
    },
    ["iso.Quiet"] = {
      factory = function() return {} end,
      functions = { [0] = function() end },
    },
  }, { code = 0 }
end
