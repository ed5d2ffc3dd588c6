"""``luaplug new``: a bundle directory that loads as written.

Without an ``api.toml`` it writes ``manifest.toml`` and a ``main.lua`` whose ``polyplug_init``
registers the contract with no functions yet. With one, it writes what ``luaplug codegen
--bundle`` writes (``manifest.toml``, ``guest/contracts.lua``, ``guest/types.lua``, ...) from a
``bundle.toml`` of its own, a copy of the ``api.toml``, and a ``main.lua`` whose impl has one
method per declared function, each returning a default value of its result type.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ApiSpecError, LuaplugError
from .ids import bundle_id, split_contract_name
from .typed.apitoml import load_api
from .typed.bundletoml import load_bundle_toml
from .typed.glue import generate_glue, plugin_setter, write_glue
from .typed.spec import ContractSpec, FunctionSpec
from .typed.types import EnumType, TypeSpec

__all__ = ["new_bundle"]


class ScaffoldError(LuaplugError):
    """The bundle cannot be written as asked (bad name or contract, files in the way)."""


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _check_contract(contract: str) -> tuple[str, int]:
    name, major = split_contract_name(contract)
    if not name:
        raise ScaffoldError(f"--contract {contract!r}: expected name@major")
    return name, 1 if major is None else major


def new_bundle(
    name: str, contract: str, out: str | os.PathLike[str], api: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write a new bundle ``name`` providing ``contract`` into the directory ``out``; the paths written.

    :raises ScaffoldError: a bad name or contract, or a file of the bundle exists already
    :raises ApiSpecError: ``api`` is invalid or does not declare ``contract`` as a guest contract
    """
    if not name or name != name.strip() or any(c in name for c in '"\\\n\r'):
        raise ScaffoldError(f"bundle name {name!r}: a non-empty name without quotes, backslashes or line breaks")
    cname, major = _check_contract(contract)
    target = Path(out)
    if api is None:
        files = {"manifest.toml": _manifest(name, cname, major), "main.lua": _raw_main(name, cname, major)}
    else:
        spec = load_api(api)
        declared = next((c for c in spec.guest_contracts if c.name == cname and c.major == major), None)
        if declared is None:
            listed = ", ".join(c.key for c in spec.guest_contracts) or "none"
            raise ApiSpecError(
                f"declares no guest contract {cname}@{major} (guest contracts: {listed})", path=spec.path
            )
        files = {
            "api.toml": Path(api).read_text("utf-8"),
            "bundle.toml": _bundle_toml(name, declared),
            "main.lua": _typed_main(name, declared),
        }
    ours = [*files, *(["manifest.toml", "guest/contracts.lua", "guest/types.lua"] if api is not None else [])]
    taken = sorted(str(target / rel) for rel in ours if (target / rel).exists())
    if taken:
        raise ScaffoldError(f"not overwriting {', '.join(taken)}")
    written = write_glue(files, target)
    if api is not None:
        # The glue from the bundle.toml just written, as `luaplug codegen --bundle` makes it.
        generated = generate_glue(load_bundle_toml(target / "bundle.toml"))
        written += write_glue(generated, target)
    return written


def _manifest(name: str, cname: str, major: int) -> str:
    return "\n".join(
        [
            f"# manifest.toml of bundle {name} (docs/reference/manifest.md lists every key).",
            f"name = {_toml(name)}",
            "# id must equal luaplug.ids.bundle_id(name); `luaplug check` prints the expected value.",
            f"id = {bundle_id(name)}",
            'version = "0.1.0"',
            'loader = "lua"',
            'file = "main.lua"',
            f"provides = [{_toml(f'{cname}@{major}')}]",
            "",
        ]
    )


def _raw_main(name: str, cname: str, major: int) -> str:
    return f"""\
-- Bundle {name}: provides {cname}@{major}.
-- polyplug_init returns (registrations, {{ code = 0 }}); each function is
-- function(impl, args_ptr, out_ptr, arena_ptr, arena_alloc), keyed by its function id
-- from 0. With an api.toml, `luaplug new ... --api api.toml` writes typed glue instead.

function polyplug_init(_host, _ctx)
  return {{
    [{_lua(cname)}] = {{
      contract_version = {major},
      plugin_name = {_lua(name)},
      factory = function(_host_ptr) return {{}} end,
      functions = {{}},
    }},
  }}, {{ code = 0 }}
end
"""


def _bundle_toml(name: str, c: ContractSpec) -> str:
    return "\n".join(
        [
            "# After editing api.toml, regenerate the glue in this directory:",
            "#   luaplug codegen --bundle bundle.toml --out .",
            "[bundle]",
            f"name = {_toml(name)}",
            'version = "0.1.0"',
            'api = "api.toml"',
            'loader = "lua"',
            'file = "main.lua"',
            "",
            "[[plugin]]",
            f"name = {_toml(name)}",
            f"implements = [{_toml(f'{c.name}@{c.version}')}]",
            "",
        ]
    )


def _default(t: TypeSpec | None) -> str:
    """A Lua value of type ``t`` the glue accepts as a result."""
    if t is None:
        return ""
    if t.kind in ("string", "bytes"):
        return '""'
    if t.kind == "bool":
        return "false"
    if isinstance(t, EnumType):
        return str(t.variants[0][1]) if t.variants else "0"
    if t.kind == "struct":
        return "{}"
    return "0"


def _method(fn: FunctionSpec) -> list[str]:
    params = ", ".join(p.name for p in fn.params)
    lines = [f"  -- {fn.signature()}"]
    for p in fn.params:
        if p.type.kind == "string":
            lines.append(f"  --   {p.name} arrives as a StringView: abi.to_str({p.name}) is its text")
    lines.append(f"  function impl:{fn.name}({params})")
    value = _default(fn.returns)
    lines.append(f"    return {value}" if value else "    -- returns nothing")
    lines += ["  end", ""]
    return lines


def _typed_main(name: str, c: ContractSpec) -> str:
    out = [f"-- Bundle {name}: implements {c.key} in plain Lua over the generated glue (guest/)."]
    if any(p.type.kind == "string" for fn in c.functions for p in fn.params):
        out.append('local abi = require("polyplug_abi")  -- abi.to_str reads StringView arguments')
    out += [
        'local contracts = require("guest.contracts")',
        "",
        "-- Called for the default impl and for every instance a host creates.",
        "local function new_impl(_host_ptr)",
        "  local impl = {}",
        "",
    ]
    for fn in c.functions:
        out += _method(fn)
    out += [
        "  return impl",
        "end",
        "",
        f"contracts.{plugin_setter(name)}(new_impl)",
        "",
    ]
    return "\n".join(out)
