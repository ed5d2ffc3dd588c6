-- An implementation written against polyplug 0.1.3's guest SDK as its example guests use it:
-- polyplug_abi's string helpers on the StringView arguments, polyplug_guest.log and
-- alloc_string through the host pointer the factory receives.
local ffi = require("ffi")
local bit = require("bit")
local polyplug = require("polyplug_guest")
local polyplug_abi = require("polyplug_abi")
local contracts = require("generated.guest.contracts")

local function new_text(host)
  local self = {}

  function self:starts_with(text, arg)
    return tostring(polyplug_abi.starts_with(text, polyplug_abi.to_str(arg)))
  end

  function self:ends_with(text, arg)
    return tostring(polyplug_abi.ends_with(text, polyplug_abi.to_str(arg)))
  end

  function self:strip_prefix(text, arg)
    return polyplug_abi.strip_prefix(text, polyplug_abi.to_str(arg))
  end

  -- "<count>" then "\0<piece>" for every piece
  local function pieces(list)
    local out = { tostring(#list) }
    for i, p in ipairs(list) do out[i + 1] = p end
    return table.concat(out, "\0")
  end

  function self:split(text, arg)
    return pieces(polyplug_abi.split(text, polyplug_abi.to_str(arg)))
  end

  function self:split_default(text, _arg)
    return pieces(polyplug_abi.split(text))
  end

  -- to_str refuses a Lua string; the other helpers take one as well as a StringView
  function self:to_str_guard(text, _arg)
    local ok = pcall(polyplug_abi.to_str, polyplug_abi.to_str(text))
    local s = polyplug_abi.to_str(text)
    return (ok and "SILENT" or "RAISED") .. "," .. tostring(polyplug_abi.starts_with(s, "a"))
      .. "," .. polyplug_abi.strip_prefix(s, "a") .. "," .. #polyplug_abi.split(s, ",")
  end

  -- a copy through host memory, freed again
  function self:copy_via_host(text, _arg)
    local view = polyplug.alloc_string(host, polyplug_abi.to_str(text))
    local copy = polyplug_abi.to_str(view)
    if view.len > 0 then
      local h = polyplug.cast_host_interface(host)
      h.free(h, ffi.cast("uint8_t*", view.ptr), view.len, 1)
    end
    return copy
  end

  function self:log(text, arg)
    polyplug.log(host, polyplug.LogLevel.Warn, polyplug_abi.to_str(arg), polyplug_abi.to_str(text))
    return ""
  end

  function self:guest_id(text, arg)
    return bit.tohex(polyplug_abi.guest_contract_id(polyplug_abi.to_str(text), polyplug_abi.to_str(arg)))
  end

  return self
end

contracts.set_text_factory(new_text)

return contracts
