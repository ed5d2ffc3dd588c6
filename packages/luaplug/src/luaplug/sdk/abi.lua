-- abi: the polyplug C ABI (spec §12) for LuaJIT's FFI, plus string and id helpers.
local ffi = require("ffi")
local bit = require("bit")

local M = { POLYPLUG_ABI_VERSION = ffi.cast("uint32_t", 1) }

-- Names, fields and layouts mirror luaplug/abi.py (ABI_CDEF) exactly, i.e. polyplug-abi
-- 0.1.3's. Each entry is {type it declares, declaration}; the declarations are concatenated
-- into one cdef. Enum constants carry their type's name (ContractType_Host): C has one
-- namespace for constants, and ffi.C.ContractType_Host reads one.
local DECLS = {
  { "ContractType", [[
typedef enum ContractType { ContractType_Host = 0, ContractType_Plugin = 1 } ContractType;]] },
  { "DispatchType", [[
typedef enum DispatchType { DispatchType_Native = 0, DispatchType_VirtualMachine = 1 } DispatchType;]] },
  { "Compatibility", [[
typedef enum Compatibility {
    Compatibility_Strict = 0, Compatibility_Relaxed = 1, Compatibility_Yolo = 2
} Compatibility;]] },
  { "ReloadPhaseType", [[
typedef enum ReloadPhaseType {
    ReloadPhaseType_Preparing = 0, ReloadPhaseType_Reloaded = 1, ReloadPhaseType_Failed = 2,
    ReloadPhaseType_Unloading = 3
} ReloadPhaseType;]] },
  { "SignaturePolicy", [[
typedef enum SignaturePolicy {
    SignaturePolicy_Off = 0, SignaturePolicy_WarnOnly = 1, SignaturePolicy_Required = 2
} SignaturePolicy;]] },
  { "SupportedLanguage", [[
typedef enum SupportedLanguage {
    SupportedLanguage_Rust = 0, SupportedLanguage_Cpp = 1, SupportedLanguage_Dotnet = 2,
    SupportedLanguage_Python = 3, SupportedLanguage_Lua = 4, SupportedLanguage_JavaScript = 5
} SupportedLanguage;]] },
  { "AbiErrorCode", [[
typedef enum AbiErrorCode {
    AbiErrorCode_Ok = 0, AbiErrorCode_Generic = 1, AbiErrorCode_BufferTooSmall = 2, AbiErrorCode_Panic = 3,
    AbiErrorCode_NotFound = 4, AbiErrorCode_StaleHandle = 5, AbiErrorCode_FunctionNotAvailable = 6,
    AbiErrorCode_DuplicateProvider = 7, AbiErrorCode_InvalidPointer = 8, AbiErrorCode_ReentrantCall = 9,
    AbiErrorCode_HostContractNotFound = 100, AbiErrorCode_HostContractVersionMismatch = 101,
    AbiErrorCode_HostContractCallFailed = 102
} AbiErrorCode;]] },
  { "LogLevel", [[
typedef enum LogLevel {
    LogLevel_Error = 1, LogLevel_Warn = 2, LogLevel_Info = 3, LogLevel_Debug = 4, LogLevel_Trace = 5
} LogLevel;]] },
  { "ParseVersionError", [[
typedef enum ParseVersionError {
    ParseVersionError_InvalidFormat = 0, ParseVersionError_InvalidInt = 1
} ParseVersionError;]] },
  { "StringView", [[
typedef struct StringView { const uint8_t* ptr; size_t len; } StringView;]] },
  { "Version", [[
typedef struct Version { uint32_t major; uint32_t minor; uint32_t patch; } Version;]] },
  { "AbiError", [[
typedef struct AbiError { uint32_t code; StringView message; } AbiError;]] },
  { "VmLoaderData", [[
typedef struct VmLoaderData { void* data; } VmLoaderData;]] },
  { "GuestContractInstance", [[
typedef struct GuestContractInstance { void* data; uint64_t contract_id; } GuestContractInstance;]] },
  { "GuestContractHandle", [[
typedef struct GuestContractHandle { uint32_t index; uint32_t generation; } GuestContractHandle;]] },
  { "Array", [[
typedef struct Array { void* items; size_t len; size_t align; } Array;]] },
  { "Buffer", [[
typedef struct Buffer { uint8_t* ptr; size_t len; size_t cap; } Buffer;]] },
  { "DependencyInfo", [[
typedef struct DependencyInfo { uint64_t contract_id; uint32_t min_version; uint64_t bundle_id; } DependencyInfo;]] },
  { "Ed25519PublicKey", [[
typedef struct Ed25519PublicKey { uint8_t bytes[32]; } Ed25519PublicKey;]] },
  { "ReloadPhase", [[
typedef struct ReloadPhase {
    uint32_t phase_type; uint64_t bundle_id; StringView bundle_name; StringView reason;
} ReloadPhase;]] },
  { "RuntimeConfig", [[
typedef struct RuntimeConfig {
    uint32_t compatibility;
    bool hot_reload_enabled;
    void (*on_reload)(void*, const ReloadPhase*);
    void* on_reload_user_data;
    void (*log)(void*, uint32_t, StringView, StringView);
    void* log_user_data;
    uint32_t log_max_level;
    uint32_t signature_policy;
    const Ed25519PublicKey* trusted_keys;
    size_t trusted_keys_len;
    size_t trusted_keys__align;
} RuntimeConfig;]] },
  { "BundleInitContext", [[
typedef struct BundleInitContext { uint64_t bundle_id; StringView bundle_path; } BundleInitContext;]] },
  { "PluginDescriptor", [[
typedef struct PluginDescriptor { StringView name; StringView contract_name; Version version; } PluginDescriptor;]] },
  { "ArenaOverflowBlock", [[
typedef struct ArenaOverflowBlock {
    struct ArenaOverflowBlock* next; size_t capacity; size_t used;
} ArenaOverflowBlock;]] },
  { "struct HostApi", [[
struct HostApi;]] },
  { "CallArena", [[
typedef struct CallArena {
    uint8_t* cur; uint8_t* end; uint8_t* base;
    const struct HostApi* host; ArenaOverflowBlock* first_overflow;
} CallArena;]] },
  { "VmCallFn", [[
typedef void (*VmCallFn)(VmLoaderData, GuestContractInstance, uint32_t, const void*,
                         void*, CallArena*, AbiError*);]] },
  { "CreateInstanceFn", [[
typedef void (*CreateInstanceFn)(VmLoaderData, const struct HostApi*, const void*,
                                 GuestContractInstance*);]] },
  { "DestroyInstanceFn", [[
typedef void (*DestroyInstanceFn)(VmLoaderData, const struct HostApi*, GuestContractInstance);]] },
  { "VmDispatch", [[
typedef struct VmDispatch { VmCallFn call; VmLoaderData loader_data; } VmDispatch;]] },
  { "NativeDispatch", [[
typedef struct NativeDispatch { uint32_t function_count; void* const* functions; } NativeDispatch;]] },
  { "DispatchMechanisms", [[
typedef union DispatchMechanisms { NativeDispatch native; VmDispatch vm; } DispatchMechanisms;]] },
  { "GuestContractInterface", [[
typedef struct GuestContractInterface {
    uint64_t contract_id;
    Version contract_version;
    uint32_t dispatch_type;
    CreateInstanceFn create_instance;
    DestroyInstanceFn destroy_instance;
    DispatchMechanisms dispatch;
} GuestContractInterface;]] },
  { "HostContractInstance", [[
typedef struct HostContractInstance { void* data; } HostContractInstance;]] },
  { "HostContractInterface", [[
typedef struct HostContractInterface {
    uint64_t contract_id;
    Version contract_version;
    bool singleton;
    uint32_t dispatch_type;
    void* runtime;
    void* user_data;
    void (*create_instance)(const struct HostContractInterface*, const void*, HostContractInstance*);
    void (*destroy_instance)(const struct HostContractInterface*, HostContractInstance);
    DispatchMechanisms dispatch;
} HostContractInterface;]] },
  { "HostApi", [[
typedef struct HostApi {
    void* runtime;
    void (*register_guest_contract)(const struct HostApi*, const PluginDescriptor*,
                                    const GuestContractInterface*, AbiError*);
    uint8_t* (*alloc)(const struct HostApi*, size_t, size_t);
    void (*free)(const struct HostApi*, uint8_t*, size_t, size_t);
    GuestContractHandle (*find_guest_contract)(const struct HostApi*, uint64_t, uint32_t);
    Array (*find_all_guest_contracts)(const struct HostApi*, uint64_t, uint32_t);
    const GuestContractInterface* (*resolve_guest_contract)(const struct HostApi*, GuestContractHandle);
    HostContractInstance (*get_host_contract)(const struct HostApi*, uint64_t, uint32_t);
    const HostContractInterface* (*resolve_host_contract_interface)(const struct HostApi*, uint64_t, uint32_t);
    Array (*list_bundles)(const struct HostApi*);
    Array (*get_dependencies)(const struct HostApi*);
    void (*load_bundle)(const struct HostApi*, const uint8_t*, size_t, AbiError*);
    void (*reload_bundle)(const struct HostApi*, const uint8_t*, size_t, AbiError*);
    void (*register_host_contract)(const struct HostApi*, const HostContractInterface*, AbiError*);
    void (*register_loader)(const struct HostApi*, void*, AbiError*);
    size_t (*get_last_error)(const struct HostApi*, uint8_t*, size_t);
    size_t (*get_error_len)(const struct HostApi*);
    void (*unload_bundle)(const struct HostApi*, uint64_t, AbiError*);
    void (*log)(const struct HostApi*, uint32_t, StringView, StringView);
    void (*create_guest_instance)(const struct HostApi*, const GuestContractInterface*,
                                  const void*, GuestContractInstance*);
    void (*destroy_guest_instance)(const struct HostApi*, const GuestContractInterface*,
                                   GuestContractInstance);
    const uint64_t* (*revision_counter)(const struct HostApi*);
    void* reserved;
} HostApi;]] },
}

local SIZES = {
  StringView = 16, Version = 12, AbiError = 24, VmLoaderData = 8,
  GuestContractInstance = 16, GuestContractHandle = 8, Array = 24,
  BundleInitContext = 24, PluginDescriptor = 48, ArenaOverflowBlock = 24,
  CallArena = 40, VmCallFn = 8, CreateInstanceFn = 8, DestroyInstanceFn = 8,
  VmDispatch = 16, DispatchMechanisms = 16, GuestContractInterface = 56,
  HostContractInstance = 8, HostContractInterface = 80, HostApi = 184,
  NativeDispatch = 16, Buffer = 24, DependencyInfo = 24, Ed25519PublicKey = 32,
  ReloadPhase = 48, RuntimeConfig = 72,
  ContractType = 4, DispatchType = 4, Compatibility = 4, ReloadPhaseType = 4, SignaturePolicy = 4,
  SupportedLanguage = 4, AbiErrorCode = 4, LogLevel = 4, ParseVersionError = 4,
}
-- Fields SDK users rely on by name; an earlier declaration must agree on them too.
local OFFSETS = {
  { "CallArena", "end", 8 }, { "GuestContractInterface", "dispatch", 40 },
  { "HostContractInterface", "dispatch", 64 }, { "NativeDispatch", "functions", 8 },
  { "HostApi", "alloc", 16 }, { "HostApi", "log", 144 },
  { "HostApi", "revision_counter", 168 },
}

local function declared(name)
  return (pcall(ffi.typeof, name))
end

-- The types live in the state's global C namespace: another copy of this module
-- (a vendored one, a second load) or the bundle itself may have declared some or all
-- of them. Only the missing ones are declared; the checks below reject a clash.
local missing = false
for _, d in ipairs(DECLS) do
  if not declared(d[1]) then missing = true; break end
end
if missing then
  local all = {}
  for i, d in ipairs(DECLS) do all[i] = d[2] end
  local ok = pcall(ffi.cdef, table.concat(all, "\n"))
  if not ok then
    for _, d in ipairs(DECLS) do
      if not declared(d[1]) then
        local fine, e = pcall(ffi.cdef, d[2])
        if not fine then error("abi: cannot declare " .. d[1] .. ": " .. tostring(e), 0) end
      end
    end
  end
end
for name, size in pairs(SIZES) do
  if not declared(name) then error("abi: type " .. name .. " is not declared", 0) end
  if ffi.sizeof(name) ~= size then
    error("abi: " .. name .. " is already declared with another layout (need " .. size .. " bytes)", 0)
  end
end
for _, f in ipairs(OFFSETS) do
  if ffi.offsetof(f[1], f[2]) ~= f[3] then
    error("abi: " .. f[1] .. "." .. f[2] .. " is not at offset " .. f[3], 0)
  end
end

local byte, sub, find = string.byte, string.sub, string.find

-- Returns nil when s is well-formed UTF-8 (the Unicode definition: no overlongs,
-- no surrogates, nothing above U+10FFFF), else the 1-based index of the bad sequence.
local function utf8_error(s)
  local i = find(s, "[\128-\255]")
  if not i then return nil end
  local n = #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local need, lo, hi
      if c >= 0xC2 and c <= 0xDF then need, lo, hi = 1, 0x80, 0xBF
      elseif c == 0xE0 then need, lo, hi = 2, 0xA0, 0xBF
      elseif c == 0xED then need, lo, hi = 2, 0x80, 0x9F
      elseif c >= 0xE1 and c <= 0xEF then need, lo, hi = 2, 0x80, 0xBF
      elseif c == 0xF0 then need, lo, hi = 3, 0x90, 0xBF
      elseif c >= 0xF1 and c <= 0xF3 then need, lo, hi = 3, 0x80, 0xBF
      elseif c == 0xF4 then need, lo, hi = 3, 0x80, 0x8F
      else return i end
      if i + need > n then return i end
      local c1 = byte(s, i + 1)
      if c1 < lo or c1 > hi then return i end
      for k = 2, need do
        local ck = byte(s, i + k)
        if ck < 0x80 or ck > 0xBF then return i end
      end
      i = i + need + 1
    end
  end
  return nil
end

-- The string helpers run on every guest call, so they keep to what LuaJIT compiles:
-- no pattern matching or string.format on the success path, and none ends in a
-- tail call of a builtin (a trace started inside the helper could not return
-- through it to the caller's frame).

-- Copies a StringView (or StringView*) into a Lua string, byte for byte: any bytes,
-- UTF-8 or not. nil and a NULL StringView* give "".
function M.to_str(sv)
  local t = type(sv)
  if t ~= "cdata" then
    if t == "nil" then return "" end
    error("to_str: expected a StringView cdata, got " .. t, 2)
  end
  if sv == nil then return "" end -- a NULL StringView*
  local ptr, len = sv.ptr, sv.len
  if len == 0 or ptr == nil then return "" end
  local s = ffi.string(ptr, len)
  return s
end

-- to_str that also requires well-formed UTF-8 and raises on anything else.
function M.to_str_utf8(sv)
  local t = type(sv)
  if t ~= "cdata" and t ~= "nil" then
    error("to_str_utf8: expected a StringView cdata, got " .. t, 2)
  end
  local s = M.to_str(sv)
  local bad = utf8_error(s)
  if bad then
    error(string.format("to_str_utf8: invalid utf-8 at byte %d of %d", bad, #s), 2)
  end
  return s
end

-- The text the string helpers below work on: a StringView (or StringView*) read as
-- to_str reads it, a Lua string as it is, nil as "".
local function text_of(v, fname)
  local t = type(v)
  if t == "string" then return v end
  if t ~= "cdata" and t ~= "nil" then
    error(fname .. ": expected a StringView cdata or a string, got " .. t, 3)
  end
  local s = M.to_str(v)
  return s
end

local function need_string(v, fname, what)
  if type(v) ~= "string" then
    error(fname .. ": " .. what .. " must be a string, got " .. type(v), 3)
  end
end

function M.starts_with(sv, prefix)
  local s = text_of(sv, "starts_with")
  need_string(prefix, "starts_with", "prefix")
  local yes = sub(s, 1, #prefix) == prefix
  return yes
end

-- An empty suffix ends every string.
function M.ends_with(sv, suffix)
  local s = text_of(sv, "ends_with")
  need_string(suffix, "ends_with", "suffix")
  local n = #suffix
  local yes = n == 0 or (n <= #s and sub(s, -n) == suffix)
  return yes
end

-- The text without prefix when it starts with prefix, else the whole text.
function M.strip_prefix(sv, prefix)
  local s = text_of(sv, "strip_prefix")
  need_string(prefix, "strip_prefix", "prefix")
  local n = #prefix
  if n > 0 and sub(s, 1, n) == prefix then s = sub(s, n + 1) end
  return s
end

-- Splits on every plain occurrence of delim, keeping empty pieces ("a,,b," -> a, "", b, "").
-- An empty text gives {}; a nil or empty delimiter gives { text }.
function M.split(sv, delim)
  local s = text_of(sv, "split")
  local out = {}
  if s == "" then return out end
  if type(delim) == "number" then delim = tostring(delim) end
  if delim == nil or delim == "" then
    out[1] = s
    return out
  end
  need_string(delim, "split", "delimiter")
  local start = 1
  while true do
    local a, b = find(s, delim, start, true)
    if not a then break end
    out[#out + 1] = sub(s, start, a - 1)
    start = b + 1
  end
  out[#out + 1] = sub(s, start)
  return out
end

local FNV_OFFSET = 0xcbf29ce484222325ULL
local FNV_PRIME = 0x100000001b3ULL

-- FNV-1a 64 over the bytes of s; uint64_t arithmetic wraps modulo 2^64.
function M.fnv1a_64(s)
  if type(s) ~= "string" then error("fnv1a_64: expected a string, got " .. type(s), 2) end
  local h = FNV_OFFSET
  for i = 1, #s do
    h = bit.bxor(h, byte(s, i)) * FNV_PRIME
  end
  return h
end

function M.bundle_id(name)
  return M.fnv1a_64(name)
end

-- The major is written as tostring writes it ("1" for 1).
function M.guest_contract_id(name, major)
  return M.fnv1a_64("guest_contract:" .. name .. "@" .. tostring(major))
end

function M.host_contract_id(name, major)
  return M.fnv1a_64("host_contract:" .. name .. "@" .. tostring(major))
end

return M
