-- text.Filter@1 "upper", through glue from `luaplug codegen --bundle bundle.toml --out generated`.
-- apply(text) upper-cases text and counts its calls in host.Store@1; a few commands exercise
-- the host caller's failure returns:
--   get:KEY          "got VALUE", or "error CODE: TEXT" (the failure handled here)
--   assert:KEY       "got VALUE", or the failure raised with assert()
--   raise:KEY        "got VALUE", or the failure raised with error(err)
--   put:KEY=VALUE    what put returned ("true")
--   why:KEY          get_last_error right after a failed get (the test reads the C API here)
--   own:KEY          bump KEY through a caller of its own, destroy it, call it again
--   fail             error("unrelated failure")
local ffi = require("ffi")
local polyplug_abi = require("polyplug_abi")
local guest = require("polyplug_guest")
local contracts = require("generated.guest.contracts")
local host_contracts = require("generated.guest.host_contracts")

local to_str = polyplug_abi.to_str

local function last_error(host_ptr)
  local host = guest.cast_host_interface(host_ptr)
  local n = tonumber(host.get_error_len(host))
  local buf = ffi.new("uint8_t[?]", n + 1)
  return ffi.string(buf, host.get_last_error(host, buf, n))
end

local function new_upper(host_ptr)
  local self = {}

  function self:apply(text)
    local s = to_str(text)
    local store = host_contracts.HostStoreContract.from_host(host_ptr, 0)
    if store == nil then return "no store" end
    local cmd, arg = s:match("^(%a+):(.*)$")
    if cmd == "get" then
      local value, err, code = store:get(arg)
      if value == nil then return "error " .. code .. ": " .. err end
      return "got " .. to_str(value)
    elseif cmd == "assert" then
      return "got " .. to_str(assert(store:get(arg)))
    elseif cmd == "raise" then
      local value, err = store:get(arg)
      if value == nil then error(err) end
      return "got " .. to_str(value)
    elseif cmd == "put" then
      local key, value = arg:match("^(.-)=(.*)$")
      return tostring(store:put(key, value))
    elseif cmd == "why" then
      assert(store:get(arg) == nil, "the get did not fail")
      return last_error(host_ptr)
    elseif cmd == "own" then
      local mine = host_contracts.HostStoreContract.from_host(host_ptr, 0)
      local n = assert(mine:bump(arg))
      mine:destroy()
      local again, err, code = mine:bump(arg)
      return tostring(tonumber(n)) .. " then " .. tostring(again) .. " " .. code .. ": " .. err
    elseif s == "fail" then
      error("unrelated failure")
    end
    local n = assert(store:bump("upper"))
    return s:upper() .. " #" .. tostring(tonumber(n))
  end

  return self
end

contracts.set_upper_factory(new_upper)
return contracts
