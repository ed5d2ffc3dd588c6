-- iso.Logger@1 fn 0 log_all(): one polyplug_guest.log line per level, scope "iso.logger".
-- polyplug_init logs one Info line with scope "iso.logger.init".
local guest = require("polyplug_guest")

local L = guest.LogLevel

local function log_all(self)
  guest.log(self.host, L.Error, "iso.logger", "an error")
  guest.log(self.host, L.Warn, "iso.logger", "a warning")
  guest.log(self.host, L.Info, "iso.logger", "some info")
  guest.log(self.host, L.Debug, "iso.logger", "debugging")
  guest.log(self.host, L.Trace, "iso.logger", "tracing")
end

function polyplug_init(host, _ctx)
  guest.log(host, L.Info, "iso.logger.init", "init ran")
  return {
    ["iso.Logger"] = {
      contract_version = 1,
      factory = function(h) return { host = h } end,
      functions = { [0] = log_all },
    },
  }, { code = 0 }
end
