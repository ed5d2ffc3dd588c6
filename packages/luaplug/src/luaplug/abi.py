"""The polyplug C ABI (spec §12) declared for cffi in ABI mode, plus its enums.

``ffi`` declares every struct and function-pointer type a host, a loader or a
guest exchanges; sizes and offsets match the x86_64 layouts of the reference
runtime exactly (checked by ``tests/test_abi.py``). No compiler is involved:
the core package is pure Python (the FFI is cffi's out-of-line ABI mode).
"""

from __future__ import annotations

import enum
import functools
from typing import TYPE_CHECKING, Any, Final

from . import _abi_ffi

__all__ = [
    "ABI_CDEF",
    "LIBC_CDEF",
    "POLYPLUG_ABI_VERSION",
    "AbiErrorCode",
    "Compatibility",
    "ContractType",
    "DispatchType",
    "LogLevel",
    "ParseVersionError",
    "ReloadPhaseType",
    "SignaturePolicy",
    "SupportedLanguage",
    "NULL_HANDLE_INDEX",
    "core_ffi",
    "ffi",
]

POLYPLUG_ABI_VERSION: Final = 1

#: ``GuestContractHandle.index`` of the null handle.
NULL_HANDLE_INDEX: Final = 0xFFFFFFFF

#: The C declarations: every struct, union, enum and function-pointer signature of
#: polyplug-abi 0.1.3 (``integration/reference/test_abi_reference.py`` compares them).
#: Enum constants carry their type's name as a prefix (``ContractType_Host``), so they do
#: not clash in C's single namespace for constants.
ABI_CDEF: Final = """
typedef enum ContractType { ContractType_Host = 0, ContractType_Plugin = 1 } ContractType;
typedef enum DispatchType { DispatchType_Native = 0, DispatchType_VirtualMachine = 1 } DispatchType;
typedef enum Compatibility {
    Compatibility_Strict = 0, Compatibility_Relaxed = 1, Compatibility_Yolo = 2
} Compatibility;
typedef enum ReloadPhaseType {
    ReloadPhaseType_Preparing = 0, ReloadPhaseType_Reloaded = 1, ReloadPhaseType_Failed = 2,
    ReloadPhaseType_Unloading = 3
} ReloadPhaseType;
typedef enum SignaturePolicy {
    SignaturePolicy_Off = 0, SignaturePolicy_WarnOnly = 1, SignaturePolicy_Required = 2
} SignaturePolicy;
typedef enum SupportedLanguage {
    SupportedLanguage_Rust = 0, SupportedLanguage_Cpp = 1, SupportedLanguage_Dotnet = 2,
    SupportedLanguage_Python = 3, SupportedLanguage_Lua = 4, SupportedLanguage_JavaScript = 5
} SupportedLanguage;
typedef enum AbiErrorCode {
    AbiErrorCode_Ok = 0, AbiErrorCode_Generic = 1, AbiErrorCode_BufferTooSmall = 2, AbiErrorCode_Panic = 3,
    AbiErrorCode_NotFound = 4, AbiErrorCode_StaleHandle = 5, AbiErrorCode_FunctionNotAvailable = 6,
    AbiErrorCode_DuplicateProvider = 7, AbiErrorCode_InvalidPointer = 8, AbiErrorCode_ReentrantCall = 9,
    AbiErrorCode_HostContractNotFound = 100, AbiErrorCode_HostContractVersionMismatch = 101,
    AbiErrorCode_HostContractCallFailed = 102
} AbiErrorCode;
typedef enum LogLevel {
    LogLevel_Error = 1, LogLevel_Warn = 2, LogLevel_Info = 3, LogLevel_Debug = 4, LogLevel_Trace = 5
} LogLevel;
typedef enum ParseVersionError {
    ParseVersionError_InvalidFormat = 0, ParseVersionError_InvalidInt = 1
} ParseVersionError;
typedef struct StringView { const uint8_t* ptr; size_t len; } StringView;
typedef struct Version { uint32_t major; uint32_t minor; uint32_t patch; } Version;
typedef struct AbiError { uint32_t code; StringView message; } AbiError;
typedef struct VmLoaderData { void* data; } VmLoaderData;
typedef struct GuestContractInstance { void* data; uint64_t contract_id; } GuestContractInstance;
typedef struct GuestContractHandle { uint32_t index; uint32_t generation; } GuestContractHandle;
typedef struct Array { void* items; size_t len; size_t align; } Array;
typedef struct Buffer { uint8_t* ptr; size_t len; size_t cap; } Buffer;
typedef struct DependencyInfo { uint64_t contract_id; uint32_t min_version; uint64_t bundle_id; } DependencyInfo;
typedef struct Ed25519PublicKey { uint8_t bytes[32]; } Ed25519PublicKey;
typedef struct ReloadPhase {
    uint32_t phase_type; uint64_t bundle_id; StringView bundle_name; StringView reason;
} ReloadPhase;
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
} RuntimeConfig;
typedef struct BundleInitContext { uint64_t bundle_id; StringView bundle_path; } BundleInitContext;
typedef struct PluginDescriptor { StringView name; StringView contract_name; Version version; } PluginDescriptor;
typedef struct ArenaOverflowBlock {
    struct ArenaOverflowBlock* next; size_t capacity; size_t used;
} ArenaOverflowBlock;
struct HostApi;
typedef struct CallArena {
    uint8_t* cur; uint8_t* end; uint8_t* base;
    const struct HostApi* host; ArenaOverflowBlock* first_overflow;
} CallArena;

typedef void (*VmCallFn)(VmLoaderData, GuestContractInstance, uint32_t, const void*,
                         void*, CallArena*, AbiError*);
typedef void (*CreateInstanceFn)(VmLoaderData, const struct HostApi*, const void*,
                                 GuestContractInstance*);
typedef void (*DestroyInstanceFn)(VmLoaderData, const struct HostApi*, GuestContractInstance);

typedef struct VmDispatch { VmCallFn call; VmLoaderData loader_data; } VmDispatch;
typedef struct NativeDispatch { uint32_t function_count; void* const* functions; } NativeDispatch;
typedef union DispatchMechanisms { NativeDispatch native; VmDispatch vm; } DispatchMechanisms;

typedef struct GuestContractInterface {
    uint64_t contract_id;
    Version contract_version;
    uint32_t dispatch_type;
    CreateInstanceFn create_instance;
    DestroyInstanceFn destroy_instance;
    DispatchMechanisms dispatch;
} GuestContractInterface;

typedef struct HostContractInstance { void* data; } HostContractInstance;
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
} HostContractInterface;

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
} HostApi;
"""

#: What luaplug calls in the C library (``_libc``), declared in the same FFI.
LIBC_CDEF: Final = """
void* malloc(size_t);
void free(void*);
int posix_memalign(void**, size_t, size_t);
unsigned long pthread_self(void);
"""

#: Word views luaplug's own C callbacks take instead of the ABI's pointer types
#: (same size and calling convention on x86_64: every field an integer word),
#: so Python receives ints and writes results without per-field cdata access.
INTERNAL_CDEF: Final = """
typedef struct InstanceWords { uintptr_t data; uint64_t contract_id; } InstanceWords;
"""

#: The FFI luaplug itself runs on: precompiled (cffi's out-of-line ABI mode,
#: pure Python, generated by ``_abi_build.py`` from the declarations above),
#: so importing luaplug parses no C; a test keeps it in step. Its type parser
#: takes named types only (no ``"struct { ... }"`` strings). Interfaces and
#: other structs handed to luaplug must come from this FFI.
core_ffi: Final[Any] = _abi_ffi.ffi
# Invariant: ``struct HostApi`` is the first type this FFI realizes. cffi (2.1) aborts the
# process (an assertion in realize_c_type.c) when some types whose definitions lead back to
# HostApi through function pointers are realized before it, e.g. ``VmCallFn`` alone; once it
# is realized, any order is safe (tests/test_abi.py tries every type first).
core_ffi.typeof("HostApi")


if TYPE_CHECKING:
    ffi: Any  # provided by __getattr__ below


@functools.lru_cache(maxsize=1)
def _inline_ffi() -> Any:
    import cffi

    inline = cffi.FFI()
    inline.cdef(ABI_CDEF)
    return inline


def __getattr__(name: str) -> Any:
    # ``luaplug.abi.ffi``: a full ABI-mode FFI with every declaration (anonymous
    # structs in type strings work), built on first use so that importing
    # luaplug stays free of the C parser.
    if name == "ffi":
        return _inline_ffi()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AbiErrorCode(enum.IntEnum):
    """``AbiError.code`` values (spec §6)."""

    Ok = 0
    Generic = 1
    BufferTooSmall = 2
    Panic = 3
    NotFound = 4
    StaleHandle = 5
    FunctionNotAvailable = 6
    DuplicateProvider = 7
    InvalidPointer = 8
    ReentrantCall = 9
    HostContractNotFound = 100
    HostContractVersionMismatch = 101
    HostContractCallFailed = 102


class LogLevel(enum.IntEnum):
    """Guest log levels (spec §6)."""

    Error = 1
    Warn = 2
    Info = 3
    Debug = 4
    Trace = 5


class DispatchType(enum.IntEnum):
    """``GuestContractInterface.dispatch_type``."""

    Native = 0
    VirtualMachine = 1


class ContractType(enum.IntEnum):
    """Which side provides a contract."""

    Host = 0
    Plugin = 1


class Compatibility(enum.IntEnum):
    """``RuntimeConfig.compatibility``: how versions are matched when resolving plugins."""

    Strict = 0
    Relaxed = 1
    Yolo = 2


class ReloadPhaseType(enum.IntEnum):
    """``ReloadPhase.phase_type``."""

    Preparing = 0
    Reloaded = 1
    Failed = 2
    Unloading = 3


class SignaturePolicy(enum.IntEnum):
    """``RuntimeConfig.signature_policy``: how bundle signatures are enforced at load time."""

    Off = 0
    WarnOnly = 1
    Required = 2


class SupportedLanguage(enum.IntEnum):
    """The language (runtime) that hosts a bundle's plugins."""

    Rust = 0
    Cpp = 1
    Dotnet = 2
    Python = 3
    Lua = 4
    JavaScript = 5


class ParseVersionError(enum.IntEnum):
    """Why a version text did not parse."""

    InvalidFormat = 0
    InvalidInt = 1
