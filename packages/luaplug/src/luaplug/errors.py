"""The one exception hierarchy of luaplug.

Every failure a host can meet is a :class:`LuaplugError`; backends translate
native (lupa, cffi) errors into these with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from . import _hostfailures
from .abi import AbiErrorCode

__all__ = [
    "InstructionLimitError",
    "InitMemoryError",
    "InitLimitError",
    "DispatchMemoryError",
    "DispatchLimitError",
    "ApiSpecError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CapabilityError",
    "ConfigError",
    "ContractNotFoundError",
    "DependencyError",
    "DispatchError",
    "DuplicateProvider",
    "HotReloadDisabled",
    "InitFailed",
    "InvalidSourceEncoding",
    "LoadError",
    "LuaError",
    "LuaMemoryError",
    "LuaSyntaxError",
    "LuaplugError",
    "ManifestError",
    "ManifestMissingFile",
    "RuntimeClosedError",
]


class LuaplugError(Exception):
    """Base class of every luaplug error."""


class ManifestError(LuaplugError):
    """A ``manifest.toml`` is missing, unparsable or invalid.

    :ivar path: the manifest file at fault
    :ivar key: the offending key, or ``None`` for file-level problems
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class _PlacedError(LuaplugError):
    """An error whose text starts with where it is: ``"<path>, key <key>: <message>"``."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ", ".join(part for part in (path, f"key {key}" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.key = key


class ApiSpecError(_PlacedError):
    """A contract declaration (an ``api.toml`` or a Python declaration) is invalid.

    :ivar path: the file at fault, or ``None`` for a Python declaration
    :ivar key: the offending key (``guest_contract[0].functions[1].return``), or ``None``
    """


class ConfigError(_PlacedError):
    """The host's luaplug configuration (``[tool.luaplug]``, ``luaplug.toml``, an
    environment variable) is invalid.

    :ivar path: the file at fault (or the variable's name)
    :ivar key: the offending key, or ``None``
    """


class LoadError(LuaplugError):
    """A bundle failed to load; nothing of it stays registered.

    :ivar bundle: the bundle name
    :ivar error: the loader's message text (spec wording)
    :ivar file: the entry file whose ``polyplug_init`` (or a registration of it) failed, the
        name polyplug reports as the bundle's there; else ``None``
    """

    def __init__(self, bundle: str, error: str, *, file: str | None = None) -> None:
        where = f"bundle {bundle!r}" if file is None or file == bundle else f"bundle {bundle!r} ({file})"
        super().__init__(f"{where}: {error}")
        self.bundle = bundle
        self.error = error
        self.file = file


class InitFailed(LoadError):
    """The Lua chunk, ``polyplug_init`` or a registration failed (spec §3-§4)."""


class ManifestMissingFile(LoadError):
    """The manifest names no entry ``file``."""

    def __init__(self, bundle: str) -> None:
        super().__init__(bundle, f'bundle "{bundle}" manifest.toml has an empty or missing `file` field')


class InvalidSourceEncoding(LoadError):
    """In-memory source bytes (spec §10) or a bundle's entry file are not UTF-8.

    :ivar path: the entry file, or ``None`` for an in-memory source
    """

    def __init__(
        self, bundle: str, *, loader: str = "lua", source_kind: str = "bytes", path: str | None = None
    ) -> None:
        text = f"invalid source encoding: loader {loader} expects UTF-8 {source_kind} source"
        super().__init__(bundle, text if path is None else f"Lua script load failed at {path}: {text}")
        self.loader = loader
        self.source_kind = source_kind
        self.path = path


class DuplicateProvider(LoadError):
    """A bundle tried to register a contract it already provides.

    :ivar contract: name of the contract that was refused
    """

    def __init__(self, bundle: str, error: str, *, contract: str = "") -> None:
        super().__init__(bundle, error)
        self.contract = contract


class BackendNotFoundError(LuaplugError):
    """No installed backend has the requested name.

    :ivar name: the requested name
    :ivar installed: names of the installed backends
    """

    def __init__(self, name: str, installed: Iterable[str], *, disabled_by: str | None = None) -> None:
        self.name = name
        self.installed = sorted(installed)
        #: the environment variable that disabled ``name`` (``None``: it is not installed)
        self.disabled_by = disabled_by
        listed = ", ".join(self.installed) or "none"
        if disabled_by is None:
            super().__init__(f"no luaplug backend named {name!r} (installed: {listed})")
        else:
            super().__init__(f"luaplug backend {name!r} is disabled by {disabled_by} (enabled backends: {listed})")


class BackendUnavailableError(LuaplugError):
    """A backend is installed but cannot run here (missing library, module...).

    :ivar name: the backend name
    :ivar reason: why it is unavailable
    :ivar hint: what to install
    """

    def __init__(self, name: str, reason: str, hint: str = "") -> None:
        self.name = name
        self.reason = reason
        self.hint = hint
        text = f"luaplug backend {name!r} is unavailable: {reason}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class CapabilityError(LuaplugError):
    """A load asked for something its backend lacks the capability for (nothing ran).

    :ivar backend: the backend's name
    :ivar capability: the capability it lacks (``luaplug.backend.CAP_*``)
    """

    def __init__(self, backend: str, capability: str, wanted: str) -> None:
        self.backend = backend
        self.capability = capability
        super().__init__(
            f"{wanted} needs capability {capability!r}, which luaplug backend {backend!r} lacks "
            "(see Runtime.capabilities; load on a backend that has it, or without the option)"
        )


class ContractNotFoundError(LuaplugError):
    """No loaded bundle provides the requested contract (or not the bundle asked for).

    :ivar contract: the contract name (without the major)
    :ivar major: the contract's major version
    :ivar bundle: the bundle asked for (``bundle=``), or ``None``
    :ivar providers: with ``bundle``, the names of the bundles that do provide it, in load order
    :ivar loaded: without ``bundle``, the ``name@major`` of every loaded contract (``None``: not given)
    """

    def __init__(
        self,
        name: str,
        major: int,
        *,
        bundle: str | None = None,
        providers: Iterable[str] = (),
        loaded: Iterable[str] | None = None,
    ) -> None:
        self.contract = name
        self.major = major
        self.bundle = bundle
        self.providers = list(providers)
        self.loaded = None if loaded is None else sorted(set(loaded))
        if bundle is None:
            text = f"no loaded bundle provides contract {name}@{major}"
            if self.loaded is not None:
                text += f" (loaded: {', '.join(self.loaded)})" if self.loaded else " (no contract is loaded)"
        else:
            listed = ", ".join(repr(p) for p in self.providers) or "none"
            text = f"bundle {bundle!r} does not provide contract {name}@{major} (its providers: {listed})"
        super().__init__(text)


class DependencyError(LuaplugError):
    """A bundle cannot be unloaded: other loaded bundles declared a dependency on it.

    :ivar bundle: the bundle that was to be unloaded
    :ivar dependents: names of the bundles depending on it (sorted)
    """

    def __init__(self, bundle: str, dependents: Iterable[str]) -> None:
        self.bundle = bundle
        self.dependents = sorted(dependents)
        listed = ", ".join(f'"{n}"' for n in self.dependents)
        super().__init__(
            f"cannot unload bundle `{bundle}`: still-loaded bundles declared a dependency on it: [{listed}]"
        )


class HotReloadDisabled(LuaplugError):
    """``reload`` on a runtime created without ``hot_reload=True``."""

    def __init__(self) -> None:
        super().__init__("hot-reload is disabled in runtime config")


class RuntimeClosedError(LuaplugError):
    """The runtime was closed."""


class DispatchError(LuaplugError):
    """A contract call returned a non-zero code.

    :ivar code: the :class:`~luaplug.AbiErrorCode`
    :ivar lua_error: the Lua error text with traceback, when the handler raised
    :ivar contract: ``"name@major"`` of the contract called
    :ivar fn_id: the function id called
    :ivar function: the function's declared name, when the caller knows it ("" otherwise)
    :ivar hint: what to do about it, when known (a stale instance after a reload)

    When the guest failed with the text of a Python host contract function's exception (it
    propagated the error its host caller returned), that exception is the ``__cause__``.
    """

    def __init__(
        self,
        code: int,
        *,
        contract: str = "",
        fn_id: int = -1,
        lua_error: str | None = None,
        function: str = "",
        hint: str = "",
    ) -> None:
        try:
            self.code: AbiErrorCode | int = AbiErrorCode(code)
        except ValueError:
            self.code = code
        self.contract = contract
        self.fn_id = fn_id
        self.lua_error = lua_error
        self.function = function
        self.hint = hint
        super().__init__(self._text())

    def _text(self) -> str:
        code = self.code
        name = code.name if isinstance(code, AbiErrorCode) else str(code)
        what = f"{self.contract}.{self.function}" if self.function else f"{self.contract} function {self.fn_id}"
        text = f"call of {what} failed with {name} ({int(code)})"
        if self.lua_error:
            text += f": {self.lua_error}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def name_function(self, function: str) -> None:
        """Name the function called (known to typed proxies) in the message."""
        self.function = function
        self.args = (self._text(),)


class LuaError(LuaplugError):
    """An error raised by Lua code outside a contract call."""


class LuaSyntaxError(LuaError):
    """Lua source failed to compile."""


class LuaMemoryError(LuaError, MemoryError):
    """A Lua state ran out of memory (or hit its cap)."""


class InstructionLimitError(LuaError):
    """Bundle code ran past its instruction budget (``instruction_limit``)."""


#: The Lua error texts the two resource limits produce (LuaJIT's and the prelude's).
MEMORY_TEXT: Final = "not enough memory"
LIMIT_TEXT: Final = "instruction limit exceeded"


class DispatchMemoryError(DispatchError, LuaMemoryError):
    """A contract call failed because the bundle hit its memory limit."""


class DispatchLimitError(DispatchError, InstructionLimitError):
    """A contract call was stopped by the bundle's instruction budget."""


class InitMemoryError(InitFailed, LuaMemoryError):
    """A load failed because the bundle hit its memory limit."""


class InitLimitError(InitFailed, InstructionLimitError):
    """A load was stopped by the bundle's instruction budget."""


def dispatch_error(code: int, contract: str, fn_id: int, lua_error: str | None, hint: str = "") -> DispatchError:
    """The :class:`DispatchError` (subclass) for a failed call's code and Lua error text."""
    cls: type[DispatchError] = DispatchError
    if lua_error is not None:
        if lua_error.startswith(MEMORY_TEXT):
            cls = DispatchMemoryError
        elif lua_error.startswith(LIMIT_TEXT):
            cls = DispatchLimitError
    err = cls(code, contract=contract, fn_id=fn_id, lua_error=lua_error, hint=hint)
    cause = _hostfailures.take(lua_error)
    if cause is not None:  # the guest failed with the text of a host function's exception
        err.__cause__ = cause
    return err


def init_failed(bundle: str, error: str, cause: str, *, file: str | None = None) -> InitFailed:
    """The :class:`InitFailed` (subclass) for a load whose Lua error text is ``cause``."""
    if cause.startswith(MEMORY_TEXT):
        return InitMemoryError(bundle, error, file=file)
    if cause.startswith(LIMIT_TEXT):
        return InitLimitError(bundle, error, file=file)
    return InitFailed(bundle, error, file=file)


# -- load-error texts of the Lua loader protocol (spec §3-§4) ------------------------------
# polyplug 0.1.3's texts: its loader's own words around the Lua runtime's, whose messages
# carry a category label (``syntax error: ``, ``runtime error: ``, ``memory error: ``) and
# name a wrong value's type as ``error converting Lua <type> to <T>``.


def lua_error(cause: str, *, syntax: bool = False) -> str:
    """``cause`` (a Lua error text) with the Lua runtime's category label, as polyplug reports it."""
    if syntax:
        return f"syntax error: {cause}"
    if cause.startswith(MEMORY_TEXT):
        return f"memory error: {cause}"
    return f"runtime error: {cause}"


def init_error_text(kind: str, details: Sequence[object], bundle: str) -> str:
    """The spec's text for a prelude ``init`` failure ``kind``."""
    d = [str(x) for x in details] + [""] * 4
    if kind == "missing_init":
        return f"Lua plugin missing polyplug_init function: bundle={bundle}"
    if kind == "init_error":  # polyplug_init raised
        return f"Lua polyplug_init failed: {lua_error(d[0])}"
    if kind == "init_result":  # it returned something else than two tables
        return f"Lua polyplug_init failed: {d[0]}"
    if kind == "init_code":
        code, message = details[0], details[1] if len(details) > 1 else ""
        if isinstance(message, str) and message:
            return message
        return f"Lua polyplug_init returned error code {_number_text(code)}"
    if kind == "iter":
        return f"Lua handlers iteration error: {d[0]}"
    if kind == "no_functions":
        return f"Lua handlers error: missing functions table for contract '{d[0]}': {d[1]}"
    if kind == "slot":
        return f"Lua function slot {int(details[0])} error for contract '{d[1]}': {d[2]}"  # type: ignore[call-overload]
    if kind == "no_factory":
        return f"Lua handlers error: contract '{d[0]}' needs a `factory` function: {d[1]}"
    if kind == "factory_failed":
        return f"factory for contract '{d[0]}' failed building the default instance: {lua_error(d[1])}"
    if kind == "bad_name":
        return f"Lua handlers iteration error: contract names must be non-empty UTF-8, got {d[0]}"
    if kind == "undeclared":  # untrusted: a key the api.toml does not declare as a guest contract
        return f"untrusted bundle: {d[0]} is not a guest contract of its api.toml (declared: {d[1] or 'none'})"
    if kind == "value_entry":  # untrusted: not a factory function
        return f"untrusted bundle: contract '{d[0]}' needs a factory function, got {d[1]}"
    if kind == "empty":
        return "Lua plugin registered no contracts: polyplug_init returned an empty registrations table"
    return f"Lua polyplug_init failed: unexpected loader result {kind!r}"


def _number_text(value: object) -> str:
    """A Lua number as the error texts show it: integral values without a fraction."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def script_load_failed(chunk: str, error: str) -> str:
    return f"Lua script load failed for {chunk}: {error}"


def missing_entry_file(path: str) -> str:
    return f"Lua script load failed at {path}: file does not exist"


def registration_refused(contract: str, code_name: str, reason: str) -> str:
    return f"register_guest_contract error for contract '{contract}': code={code_name} ({reason})"


def host_contract_unavailable(code: int, contract_id: int, min_version: int) -> str:
    """``get_last_error`` after ``get_host_contract`` returned null data (``code`` says why).

    Not found and a version mismatch read as polyplug 0.1.3 words both; a failed instance
    factory has its own text.
    """
    if code == 102:  # HostContractCallFailed
        return f"host contract instance creation failed: id={contract_id}, min_version={min_version}"
    return f"host contract not found: id={contract_id}, min_version={min_version}"


def host_contract_interface_not_found(contract_id: int, min_version: int) -> str:
    """``get_last_error`` after ``resolve_host_contract_interface`` returned null (polyplug 0.1.3's words)."""
    return f"host contract interface not found: id={contract_id}, min_version={min_version}"


class ErrorMap:
    """One engine's error mapping (see :func:`map_errors`)."""

    __slots__ = ("_catch", "_default", "_table")

    def __init__(
        self, table: Mapping[object, type[LuaError]], default: type[LuaError], catch: tuple[type[BaseException], ...]
    ) -> None:
        self._table = dict(table)
        self._default = default
        self._catch = catch

    def __call__(self, key: object, text: str | None = None) -> LuaError:
        """luaplug's error for ``key`` with ``text`` (default: ``str(key)``)."""
        found = self._table.get(key) if key.__class__.__hash__ is not None else None
        if found is None and isinstance(key, BaseException):
            found = next((self._table[k] for k in type(key).__mro__ if k in self._table), None)
        return (found or self._default)(str(key) if text is None else text)

    def __enter__(self) -> ErrorMap:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, self._catch):
            raise self(exc) from exc


def map_errors(
    table: Mapping[object, type[LuaError]],
    *,
    default: type[LuaError] = LuaError,
    catch: tuple[type[BaseException], ...] = (),
) -> ErrorMap:
    """The one way an engine turns its own failures into luaplug's errors.

    ``table`` maps what the engine reports — a status code, a result kind, or an exception class
    (matched along the exception's class hierarchy) — to a :class:`LuaError` subclass; anything
    else maps to ``default``. The result is called as ``mapped(key, text)`` (the error to raise),
    and is a context manager that re-raises an exception of a ``catch`` class as its mapping.
    """
    return ErrorMap(table, default, catch)
