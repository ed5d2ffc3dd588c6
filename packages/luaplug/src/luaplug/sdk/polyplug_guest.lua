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
local host_ptr_t = ffi.typeof("HostApi*")
local ctx_ptr_t = ffi.typeof("BundleInitContext*")
local u8_ptr_t = ffi.typeof("uint8_t*")
local StringView = ffi.typeof("StringView")
local AbiError = ffi.typeof("AbiError")

-- These helpers run on every guest call: none ends in a tail call of a builtin
-- (a trace started inside a helper could not return through it to the caller's
-- frame, and LuaJIT would end up interpreting every caller), and the success
-- paths allocate nothing but the cdata they return.

local function address(p)
  local a = ffi.cast(uintptr_t, p or 0)
  return a
end

function M.cast_host_interface(n)
  local h = ffi.cast(host_ptr_t, address(n))
  return h
end

function M.cast_context(p)
  local c = ffi.cast(ctx_ptr_t, address(p))
  return c
end

-- The view borrows s's bytes (for "" too): it is valid only while the caller keeps s alive.
-- nil gives the null view.
function M.string_view(s)
  local view
  if s == nil then
    view = StringView(nil, 0)
  elseif type(s) ~= "string" then
    error("string_view: expected a string, got " .. type(s), 2)
  else
    view = StringView(s, #s)
  end
  return view
end

-- Copies s into memory from host.alloc; freeing it belongs to whoever receives it.
function M.alloc_string(host_ptr, s)
  if address(host_ptr) == 0 then error("alloc_string: host pointer is nil", 2) end
  if type(s) ~= "string" then error("alloc_string: expected a string, got " .. type(s), 2) end
  local n = #s
  local view
  if n == 0 then
    view = StringView(nil, 0)
  else
    local host = M.cast_host_interface(host_ptr)
    local p = host.alloc(host, n, 1)
    if p == nil then error("alloc_string: host allocation failed (" .. n .. " bytes)", 2) end
    ffi.copy(p, s, n)
    view = StringView(p, n)
  end
  return view
end

-- Copies s into the call arena; the view stays valid until the arena's next reset.
function M.alloc_string_arena(arena_alloc, arena_ptr, s)
  if type(s) ~= "string" then error("alloc_string_arena: expected a string, got " .. type(s), 2) end
  local n = #s
  local view
  if n == 0 then
    view = StringView(nil, 0)
  else
    -- The allocator answers an address as a Lua number (0: out of memory), or a pointer.
    local r = arena_alloc(n, arena_ptr)
    local p
    if type(r) == "number" then
      p = r ~= 0 and ffi.cast(u8_ptr_t, r) or nil
    else
      p = ffi.cast(u8_ptr_t, address(r))
    end
    if p == nil then error("alloc_string_arena: arena allocation failed (" .. n .. " bytes)", 2) end
    ffi.copy(p, s, n)
    view = StringView(p, n)
  end
  return view
end

function M.log(host_ptr, level, scope, message)
  if address(host_ptr) == 0 then return end
  local host = M.cast_host_interface(host_ptr)
  if host.log == nil then return end
  scope, message = tostring(scope or ""), tostring(message or "")
  -- scope and message are locals, so both strings outlive the call.
  host.log(host, level, M.string_view(scope), M.string_view(message))
end

-- AbiError is filled field by field: LuaJIT does not compile a constructor with
-- initializers for a struct that holds a struct.
function M.ok()
  local e = AbiError()
  return e
end

-- The message view borrows msg: the caller owns msg and keeps it alive while the error is read.
function M.err(code, msg)
  local view = M.string_view(msg)
  local e = AbiError()
  e.code = code
  e.message.ptr, e.message.len = view.ptr, view.len
  return e
end

return M
