-- polyplug_guest: helpers for Lua plugin bundles (spec §11). Keeps no state.
-- Pointers arrive as Lua numbers (0 for null) or as cdata; both are accepted.
local ffi = require("ffi")
require("polyplug_abi")

local M = {}

M.AbiErrorCode = {
  Ok = 0, Generic = 1, BufferTooSmall = 2, Panic = 3, NotFound = 4, StaleHandle = 5,
  FunctionNotAvailable = 6, DuplicateProvider = 7, InvalidPointer = 8, ReentrantCall = 9,
  HostContractNotFound = 100, HostContractVersionMismatch = 101, HostContractCallFailed = 102,
}
M.DispatchType = { Native = 0, VirtualMachine = 1 }
M.LogLevel = { Error = 1, Warn = 2, Info = 3, Debug = 4, Trace = 5 }

local uintptr_t = ffi.typeof("uintptr_t")
local host_ptr_t = ffi.typeof("const HostApi*")
local ctx_ptr_t = ffi.typeof("const BundleInitContext*")
local u8_ptr_t = ffi.typeof("uint8_t*")
local StringView = ffi.typeof("StringView")
local AbiError = ffi.typeof("AbiError")

local function address(p)
  return ffi.cast(uintptr_t, p or 0)
end

function M.cast_host_interface(n)
  return ffi.cast(host_ptr_t, address(n))
end

function M.cast_context(p)
  return ffi.cast(ctx_ptr_t, address(p))
end

-- The view borrows s's bytes: it is valid only while the caller keeps s alive.
function M.string_view(s)
  if s == nil or s == "" then return StringView(nil, 0) end
  if type(s) ~= "string" then error("string_view: expected a string, got " .. type(s), 2) end
  return StringView(s, #s)
end

-- Copies s into memory from host.alloc; freeing it belongs to whoever receives it.
function M.alloc_string(host_ptr, s)
  if address(host_ptr) == 0 then error("alloc_string: null host", 2) end
  if type(s) ~= "string" then error("alloc_string: expected a string, got " .. type(s), 2) end
  local n = #s
  if n == 0 then return StringView(nil, 0) end
  local host = M.cast_host_interface(host_ptr)
  local p = host.alloc(host, n, 1)
  if p == nil then error("alloc_string: host alloc of " .. n .. " bytes failed", 2) end
  ffi.copy(p, s, n)
  return StringView(p, n)
end

-- Copies s into the call arena; the view stays valid until the arena's next reset.
function M.alloc_string_arena(arena_alloc, arena_ptr, s)
  if type(s) ~= "string" then error("alloc_string_arena: expected a string, got " .. type(s), 2) end
  local n = #s
  if n == 0 then return StringView(nil, 0) end
  local addr = address(arena_alloc(n, arena_ptr))
  if addr == 0 then error("alloc_string_arena: arena alloc of " .. n .. " bytes failed", 2) end
  local p = ffi.cast(u8_ptr_t, addr)
  ffi.copy(p, s, n)
  return StringView(p, n)
end

function M.log(host_ptr, level, scope, message)
  if address(host_ptr) == 0 then return end
  local host = M.cast_host_interface(host_ptr)
  if host.log == nil then return end
  scope, message = tostring(scope or ""), tostring(message or "")
  -- scope and message are locals, so both strings outlive the call.
  host.log(host, level, M.string_view(scope), M.string_view(message))
end

function M.ok()
  return AbiError(0)
end

-- The message view borrows msg: the caller owns msg and keeps it alive while the error is read.
function M.err(code, msg)
  return AbiError(code, M.string_view(msg))
end

return M
