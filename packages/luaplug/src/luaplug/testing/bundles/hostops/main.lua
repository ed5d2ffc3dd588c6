-- The HostApi bundle operations, driven from Lua through the `host` pointer (ffi).
-- fn 0 run(StringView command) -> StringView reply, reply = "<code>|<text>":
--   list                   list_bundles: "0|<len>|<align>|<id>,<id>,..." (ids in decimal)
--   findall <cid> <min>    find_all_guest_contracts: "0|<len>|<align>|<index>:<generation>,..."
--   deps                   get_dependencies now: "0|<len>|<align>|<contract_id>:<min_version>:<bundle_id>,..."
--   deps_init              what get_dependencies answered while polyplug_init ran (same form)
--   load <path>            load_bundle: "<code>|<get_last_error text when code ~= 0>"
--   reload <path>          reload_bundle (same reply)
--   loadhex <hex> / reloadhex <hex>   the same with the path bytes given in hex
--   loadnull / reloadnull  a null path pointer (length 4)
--   noerr <path>           load_bundle with a null AbiError*: "0|done"
--   unload <id>            unload_bundle (id in decimal)
--   unloadself             unload_bundle of this bundle's own id
--   call <name@major> <command>   peer call: fn 0 of that contract with <command> as its string
--   waitfile <path> <command>     wait until file <path> exists, then run <command>
--   init_result            the reply of init_command.txt's command, run by polyplug_init
--                          (a file in the bundle directory; "none" when there is none)
-- Arrays are freed with host.free(host, items, len * element size, align).
-- The contract name depends on the bundle id, so copies under other names serve other contracts.
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")

if not pcall(ffi.typeof, "DependencyInfo") then
  ffi.cdef("typedef struct DependencyInfo { uint64_t contract_id; uint32_t min_version; uint64_t bundle_id; } DependencyInfo;")
end

local CONTRACTS = { hostops = "ops.HostOps", hostops_peer = "ops.Peer", hostops_more = "ops.More" }

local function dec(v)
  return (tostring(ffi.cast("uint64_t", v)):gsub("ULL$", ""))
end

local function u64(text)
  local v = ffi.new("uint64_t", 0)
  for d in text:gmatch("%d") do v = v * 10 + (d:byte() - 48) end
  return v
end

local function last_error(host)
  local n = tonumber(host.get_error_len(host))
  if n == 0 then return "" end
  local buf = ffi.new("uint8_t[?]", n)
  local got = tonumber(host.get_last_error(host, buf, n))
  return ffi.string(buf, math.min(got, n))
end

-- Reads an Array of `ctype` elements, formats each with `fmt`, frees it.
local function drain(host, arr, ctype, fmt)
  local len = tonumber(arr.len)
  local parts = {}
  if len > 0 then
    local items = ffi.cast(ffi.typeof("const $*", ffi.typeof(ctype)), arr.items)
    for i = 0, len - 1 do parts[#parts + 1] = fmt(items[i]) end
    host.free(host, ffi.cast("uint8_t*", arr.items), len * ffi.sizeof(ctype), arr.align)
  end
  return "0|" .. len .. "|" .. tonumber(arr.align) .. "|" .. table.concat(parts, ",")
end

local function deps_text(host)
  return drain(host, host.get_dependencies(host), "DependencyInfo", function(d)
    return dec(d.contract_id) .. ":" .. tonumber(d.min_version) .. ":" .. dec(d.bundle_id)
  end)
end

local function reply(host, err)
  local code = tonumber(err[0].code)
  if code == 0 then return "0|" end
  return code .. "|" .. last_error(host)
end

local function unhex(h)
  return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local self_id, at_init, init_result = nil, nil, "none"
local run

local function path_op(host, op, path)
  local err = ffi.new("AbiError[1]")
  if path == nil then
    host[op](host, nil, 4, err)
  else
    host[op](host, ffi.cast("const uint8_t*", path), #path, err)
  end
  return reply(host, err)
end

local function peer(host, target, command)
  local name, major = target:match("^(.-)@(%d+)$")
  local handle = host.find_guest_contract(host, abi.guest_contract_id(name, tonumber(major)), tonumber(major))
  if handle.index == 0xFFFFFFFF then return "4|" .. target .. " not found" end
  local iface = host.resolve_guest_contract(host, handle)
  if iface == nil then return "5|" .. target .. " is stale" end
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local sv = ffi.new("StringView[1]", { { command, #command } })
  local res = ffi.new("StringView[1]")
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, sv, res, nil, err)
  host.destroy_guest_instance(host, iface, inst[0])
  if err[0].code ~= 0 then return tonumber(err[0].code) .. "|the call into " .. target .. " failed" end
  local text = ffi.string(res[0].ptr, res[0].len)
  if res[0].ptr ~= nil then host.free(host, ffi.cast("uint8_t*", res[0].ptr), res[0].len, 1) end
  return text
end

function run(host, command)
  local op, rest = command:match("^(%S+)%s*(.-)$")
  if op == "list" then
    return drain(host, host.list_bundles(host), "uint64_t", dec)
  elseif op == "findall" then
    local cid, min = rest:match("^(%d+)%s+(%d+)$")
    return drain(host, host.find_all_guest_contracts(host, u64(cid), tonumber(min)), "GuestContractHandle",
      function(h) return tonumber(h.index) .. ":" .. tonumber(h.generation) end)
  elseif op == "deps" then
    return deps_text(host)
  elseif op == "deps_init" then
    return at_init
  elseif op == "load" or op == "reload" then
    return path_op(host, op .. "_bundle", rest)
  elseif op == "loadhex" or op == "reloadhex" then
    return path_op(host, op:sub(1, -4) .. "_bundle", unhex(rest))
  elseif op == "loadnull" or op == "reloadnull" then
    return path_op(host, op:sub(1, -5) .. "_bundle", nil)
  elseif op == "noerr" then
    host.load_bundle(host, ffi.cast("const uint8_t*", rest), #rest, nil)
    return "0|done"
  elseif op == "unload" or op == "unloadself" then
    local err = ffi.new("AbiError[1]")
    host.unload_bundle(host, op == "unload" and u64(rest) or self_id, err)
    return reply(host, err)
  elseif op == "init_result" then
    return init_result
  elseif op == "waitfile" then
    local path, inner = rest:match("^(%S+)%s+(.*)$")
    while true do
      local f = io.open(path, "rb")
      if f then f:close() break end
    end
    return run(host, inner)
  elseif op == "call" then
    local target, inner = rest:match("^(%S+)%s+(.*)$")
    return peer(host, target, inner)
  end
  error("unknown command " .. command)
end

function polyplug_init(host_ptr, ctx_ptr)
  local host = guest.cast_host_interface(host_ptr)
  local ctx = guest.cast_context(ctx_ptr)
  self_id = ctx.bundle_id
  at_init = deps_text(host)
  local f = io.open(ffi.string(ctx.bundle_path.ptr, ctx.bundle_path.len) .. "/init_command.txt", "rb")
  if f then
    init_result = run(host, (f:read("*a"):gsub("%s+$", "")))
    f:close()
  end
  local contract = "ops.Bundle" .. dec(self_id)
  for name, c in pairs(CONTRACTS) do
    if abi.bundle_id(name) == self_id then contract = c end
  end
  return {
    [contract] = {
      contract_version = 1,
      plugin_name = "hostops-plugin",
      factory = function(h) return { host = h } end,
      functions = {
        [0] = function(self, args, out, arena, arena_alloc)
          local command = ffi.string(ffi.cast("const StringView*", args).ptr, ffi.cast("const StringView*", args).len)
          local text = run(guest.cast_host_interface(self.host), command)
          ffi.cast("StringView*", out)[0] = guest.alloc_string_arena(arena_alloc, arena, text)
        end,
      },
    },
  }, { code = 0 }
end
