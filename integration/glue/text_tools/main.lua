-- shapes.Scanner@1 through glue from `luaplug codegen --bundle bundle.toml --out generated`.
local ffi = require("ffi")
local polyplug_abi = require("polyplug_abi")
local contracts = require("generated.guest.contracts")
local types = require("generated.guest.types")
local peers = require("generated.guest.peer_callers")
local host_contracts = require("generated.guest.host_contracts")

local to_str = polyplug_abi.to_str
local Mode, Caps = types.Mode, types.Caps

local function new_scanner(host)
  local self = { cleared_count = 0 }

  function self:scan(text, stamp, loud)
    local s = to_str(text)
    if loud then s = s:upper() end
    return string.format("%s|mode=%d|caps=%d|serial=%d|weight=%.2f",
      s, stamp.mode, stamp.caps, tonumber(stamp.serial), stamp.weight)
  end

  function self:weigh(blob)
    local p, total = ffi.cast("const uint8_t*", blob.ptr), 0
    for i = 0, tonumber(blob.len) - 1 do total = total + p[i] end
    return total
  end

  function self:clear() self.cleared_count = self.cleared_count + 1 end
  function self:cleared() return self.cleared_count end
  function self:upper(text) return to_str(text):upper() end

  function self:next_mode(mode)
    if mode == Mode.Idle then return Mode.Busy end
    return Mode.Idle
  end

  function self:stamp_of(serial)
    return { mode = Mode.Busy, caps = Caps.Both, serial = serial, weight = 0.5 }
  end

  function self:reverse(blob)
    return ffi.string(blob.ptr, blob.len):reverse()
  end

  function self:ask_peer(text)
    local counter = peers.ShapesCounterPeer.resolve(host)
    if counter == nil then return "no peer" end
    local n = counter:bump(5)
    local label = counter:label()
    return string.format("%s:%d:%d:%s", to_str(label), tonumber(n), counter:add(2, 3), to_str(text))
  end

  function self:ask_host(text)
    local notes = host_contracts.HostNotesContract.from_host(host, 0)
    if notes == nil then return "no host contract" end
    local n = notes:note(text)
    local tagged = notes:tag(Mode.Busy, to_str(text))
    if n == nil or tagged == nil then return "host call failed" end
    return to_str(tagged) .. "#" .. tostring(n)
  end

  return self
end

contracts.set_scanner_factory(new_scanner)
return contracts
