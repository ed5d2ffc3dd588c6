-- iso.SdkUser@1: string handlers written with the guest SDK, and what LuaJIT made of them.
--   fn 0 greet(StringView name) -> StringView "hello, <name>" (abi.to_str, guest.alloc_string_arena)
--   fn 1 strict(StringView s) -> StringView s, read with abi.to_str_utf8 (raises on bad UTF-8)
--   fn 2 jit_report() -> StringView: "traces=<n>" and one "abort ..." line per aborted trace
--        that started in the SDK modules or stopped in them or in the host prelude
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")

local traces, aborts = 0, {}
local starts = {}

local function where(func, pc)
  local info = require("jit.util").funcinfo(func, pc)
  return tostring(info.source) .. ":" .. tostring(info.currentline or info.linedefined)
end

local function in_sdk(text)
  return text:find("abi.lua", 1, true) or text:find("polyplug_guest.lua", 1, true)
end

local has_jit = type(jit) == "table" and type(jit.attach) == "function"
if has_jit then
  jit.attach(function(what, tr, func, pc, code)
    if what == "start" then
      starts[tr] = where(func, pc)
    elseif what == "stop" then
      traces = traces + 1
    elseif what == "abort" then
      local from, at = starts[tr] or "?", where(func, pc)
      -- A trace the host's dispatcher started may stop in the handler's own code.
      if in_sdk(from) or in_sdk(at) or at:find("luaplug_host", 1, true) then
        aborts[#aborts + 1] = "abort " .. from .. " at " .. at .. " error " .. tostring(code)
      end
    end
  end, "trace")
end

local function reply(out, arena, arena_alloc, text)
  local slot = ffi.cast("StringView*", ffi.cast("uintptr_t", out))
  slot[0] = guest.alloc_string_arena(arena_alloc, arena, text)
end

local function greet(_self, args, out, arena, arena_alloc)
  local name = ffi.cast("const StringView*", ffi.cast("uintptr_t", args))
  reply(out, arena, arena_alloc, "hello, " .. abi.to_str(name[0]))
end

local function strict(_self, args, out, arena, arena_alloc)
  local s = ffi.cast("const StringView*", ffi.cast("uintptr_t", args))
  reply(out, arena, arena_alloc, abi.to_str_utf8(s[0]))
end

local function jit_report(_self, _args, out, arena, arena_alloc)
  local lines = { "traces=" .. (has_jit and traces or -1) }
  for _, a in ipairs(aborts) do lines[#lines + 1] = a end
  reply(out, arena, arena_alloc, table.concat(lines, "\n"))
end

function polyplug_init(_host, _ctx)
  return {
    ["iso.SdkUser"] = {
      contract_version = 1,
      plugin_name = "sdkuser-plugin",
      factory = function(_host) return {} end,
      functions = { [0] = greet, [1] = strict, [2] = jit_report },
    },
  }, { code = guest.AbiErrorCode.Ok }
end
