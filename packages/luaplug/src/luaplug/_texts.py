"""Load-error texts of the Lua loader protocol (spec §3-§4), in one place.

They are polyplug 0.1.3's texts: its loader's own words around the Lua runtime's, whose
messages carry a category label (``syntax error: ``, ``runtime error: ``, ``memory error: ``)
and name a wrong value's type as ``error converting Lua <type> to <T>``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: What LuaJIT says when an allocation fails (``errors.MEMORY_TEXT``).
_MEMORY_TEXT = "not enough memory"


def lua_error(cause: str, *, syntax: bool = False) -> str:
    """``cause`` (a Lua error text) with the Lua runtime's category label, as polyplug reports it."""
    if syntax:
        return f"syntax error: {cause}"
    if cause.startswith(_MEMORY_TEXT):
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
