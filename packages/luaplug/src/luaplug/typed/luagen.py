"""Guest-side Lua glue for typed contracts (``luaplug codegen --lang lua``).

The generated ``contracts.lua`` declares the arg-pack structs, unpacks each call's
arguments (spec §14), calls the same-named method of the impl the author's factory
built, and writes the result to the out slot (strings through the call arena). The
author sets a factory and returns the registrations from ``polyplug_init``::

    local contracts = require("contracts")
    local Calc = {}
    Calc.__index = Calc
    function Calc:add(a, b) return a + b end
    contracts.set_my_plugin_factory(function(host_ptr) return setmetatable({}, Calc) end)
    function polyplug_init(host_ptr, ctx_ptr)
      return contracts.register_my_plugin(), { code = 0 }
    end
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ..errors import ApiSpecError
from .layout import layout, pack_decls
from .spec import ApiSpec, ContractSpec, FunctionSpec
from .types import EnumType, TypeSpec

__all__ = ["GLUE_FILE", "generate_lua", "lua_identifier", "write_lua"]

#: The file ``write_lua`` writes (the module name authors ``require``).
GLUE_FILE: Final = "contracts.lua"


def lua_identifier(plugin: str) -> str:
    """The plugin name as part of a Lua identifier: ``"typed-calc"`` -> ``"typed_calc"``."""
    ident = re.sub(r"\W", "_", plugin, flags=re.ASCII).strip("_") or "plugin"
    return f"_{ident}" if ident[0].isdigit() else ident


def _lua_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{out}"'


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}-- {line}".rstrip() for line in text.strip().splitlines()] if text.strip() else []


_LUA_KEYWORDS: Final = frozenset(
    "and break do else elseif end false for function goto if in local nil not or repeat return then true until "
    "while".split()
)


def _field(obj: str, name: str) -> str:
    return f'{obj}["{name}"]' if name in _LUA_KEYWORDS else f"{obj}.{name}"


def _method_call(name: str, args: str) -> str:
    if name in _LUA_KEYWORDS:
        return f'self["{name}"](self{", " + args if args else ""})'
    return f"self:{name}({args})"


def _read(t: TypeSpec, expr: str) -> str:
    """A Lua expression turning a field read from C into what the author's method gets."""
    return f"to_str({expr})" if t.kind == "string" else expr


def _function(spec: ContractSpec, fn_id: int, fn: FunctionSpec) -> list[str]:
    lines = [f"  -- {fn_id}: {fn.signature()}", *_comment(fn.docs, "  ")]
    shape = layout(fn)
    lines.append("  do")
    if shape.kind != "none":
        lines.append(f'    local args_t = ffi.typeof("const {shape.pointee(spec.args_struct_name(fn))}*")')
    if fn.returns is not None:
        lines.append(f'    local out_t = ffi.typeof("{fn.returns.ctype}*")')
    lines.append(f"    functions[{fn_id}] = function(self, args_ptr, out_ptr, arena_ptr, arena_alloc)")
    if shape.kind == "single":
        call_args = _read(fn.params[0].type, "ffi.cast(args_t, args_ptr)[0]")
    elif shape.kind == "struct":
        lines.append("      local a = ffi.cast(args_t, args_ptr)")
        call_args = ", ".join(_read(p.type, _field("a", p.name)) for p in fn.params)
    else:
        call_args = ""
    if fn.returns is None:
        lines.append(f"      {_method_call(fn.name, call_args)}")
    else:
        lines.append(f"      local r = {_method_call(fn.name, call_args)}")
        check = result_check(fn.returns, "r", _lua_string(f"{spec.key}.{fn.name}()"))
        if check:
            lines.append(f"      {check}")
        value = "alloc_string_arena(arena_alloc, arena_ptr, r)" if fn.returns.kind == "string" else "r"
        lines.append(f"      if out_ptr ~= 0 then ffi.cast(out_t, out_ptr)[0] = {value} end")
    lines += ["    end", "  end"]
    return lines


def result_check(t: TypeSpec, var: str, where: str) -> str:
    """A Lua statement raising ``<where> must return a <kind>, not a <type>`` for a result of the wrong
    Lua type ("" when any Lua value converts, or ``t`` is checked where it is stored)."""
    if t.kind == "string":
        return f'if type({var}) ~= "string" then bad_result({where}, "a string", {var}) end'
    if t.kind in ("int", "float", "enum"):
        return f'if type({var}) ~= "number" and type({var}) ~= "cdata" then bad_result({where}, "a number", {var}) end'
    return ""


#: The Lua helpers of :func:`result_check` and of the factory-time method check.
GLUE_CHECKS: Final = """\
local function bad_result(where, what, value)
  local got = value == nil and "nil" or ("a " .. type(value))
  error(where .. " must return " .. what .. ", not " .. got, 0)
end

-- The impl a factory built must have every method of the contract (checked once per impl).
local function check_impl(impl, methods, contract)
  if impl == nil then error(contract .. ": the factory returned nil, not an impl", 0) end
  local missing = {}
  for _, name in ipairs(methods) do
    if impl[name] == nil then missing[#missing + 1] = name .. "()" end
  end
  if #missing > 0 then
    error(contract .. ": the impl lacks " .. table.concat(missing, ", "), 0)
  end
  return impl
end
"""


def methods_table(c: ContractSpec) -> str:
    """The Lua list of ``c``'s function names."""
    return "{ " + ", ".join(_lua_string(fn.name) for fn in c.functions) + " }"


def _enum(e: EnumType) -> list[str]:
    fields = ", ".join(f"{name} = {value}" for name, value in e.variants)
    return [*_comment(e.docs), f"M.{e.name} = {{ {fields} }}"]


def generate_lua(api: ApiSpec, plugin: str, contracts: Sequence[str] | None = None, *, source: str = "") -> str:
    """The text of ``contracts.lua`` for plugin ``plugin``.

    :param contracts: the guest contracts it provides (``"name@major"``; default: all)
    :param source: what to name as the declaration's origin in the header
    :raises ApiSpecError: an unknown contract, or an enum name that is not a Lua identifier
    """
    chosen = [api.contract(c) for c in contracts] if contracts else list(api.guest_contracts)
    if not chosen:
        raise ApiSpecError("declares no guest contract to generate glue for", path=api.path)
    for c in chosen:
        if c.kind != "guest":
            raise ApiSpecError(
                f"{c.key} is a host contract: the single-file glue implements guest contracts; its caller "
                "(guest/host_contracts.lua) comes from codegen --bundle bundle.toml or --api api.toml",
                path=api.path,
            )
        for fn in c.functions:
            used = [p.type for p in fn.params] + ([fn.returns] if fn.returns is not None else [])
            odd = next((t for t in used if t.kind in ("struct", "bytes")), None)
            if odd is not None:
                raise ApiSpecError(
                    f"{c.key} {fn.name}() uses {odd.name}: the single-file glue takes scalars, StringView and "
                    "enums; generate with --bundle for structs and Buffer",
                    path=api.path,
                )
    ident = lua_identifier(plugin)
    setter, register = f"set_{ident}_factory", f"register_{ident}"
    origin = source or api.path or "a Python declaration"
    out = [
        f"-- contracts.lua: generated by `luaplug codegen` from {os.path.basename(origin)}; do not edit.",
        f"-- Plugin {_lua_string(plugin)} provides: {', '.join(c.key for c in chosen)}",
        "--",
        "-- Write the methods in plain Lua; each function calls the same-named method of the",
        "-- impl your factory built (impl:add(a, b)). StringView params arrive as Lua strings,",
        "-- i64/u64 as LuaJIT int64 cdata, bool as booleans, enums as numbers (see M.<Enum>).",
        "--",
        '--   local contracts = require("contracts")',
        f"--   contracts.{setter}(function(host_ptr) return setmetatable({{}}, Impl) end)",
        f"--   function polyplug_init(host_ptr, ctx_ptr) return contracts.{register}(), {{ code = 0 }} end",
        'local ffi = require("ffi")',
        'local abi = require("polyplug_abi")',
        'local guest = require("polyplug_guest")',
        "",
        "local to_str = abi.to_str",
        "local alloc_string_arena = guest.alloc_string_arena",
        "",
        "local M = {}",
        f"M.PLUGIN_NAME = {_lua_string(plugin)}",
        "",
    ]
    for e in api.enums:
        if not e.name.isidentifier() or not e.name.isascii():
            raise ApiSpecError(f"enum name {e.name!r} is not a Lua identifier", path=api.path)
        out += _enum(e)
    if api.enums:
        out.append("")
    structs = [pack for c in chosen for pack in pack_decls(c.struct_name, c.functions)]
    if structs:
        out += [
            "-- Arg-pack structs: <ContractStruct><FnPascal>Args, fields in declaration order (C layout).",
            "local function cdef_once(name, decl)",
            "  if not pcall(ffi.typeof, name) then ffi.cdef(decl) end",
            "end",
        ]
        out += [f'cdef_once("{name}", "{decl}")' for name, decl in structs]
        out.append("")
    out += [
        "local default_factory",
        "local factories = {}",
        "",
        f"--- {setter}(factory [, contract]): factory(host_ptr) returns one impl (called for the",
        "--- default impl and for every instance); with `contract` (a name) it serves that contract only.",
        f"function M.{setter}(factory, contract)",
        '  if type(factory) ~= "function" then',
        f'    error("{setter}: expected a function, got " .. type(factory), 2)',
        "  end",
        "  if contract == nil then default_factory = factory else factories[contract] = factory end",
        "end",
        "",
        GLUE_CHECKS,
        "local function factory_for(contract, key, methods)",
        "  return function(host_ptr)",
        "    local f = factories[contract] or default_factory",
        f'    if f == nil then error("no factory for " .. contract .. ": call {setter} first", 0) end',
        "    return check_impl(f(host_ptr), methods, key)",
        "  end",
        "end",
        "",
    ]
    for c in chosen:
        out += [f"-- {c.key}", *_comment(c.docs)]
        out.append(f"local function {c.struct_name}_functions()")
        out.append("  local functions = {}")
        for i, fn in enumerate(c.functions):
            out += _function(c, i, fn)
        out += ["  return functions", "end", ""]
    out += [
        f"--- {register}([registrations]): adds this plugin's contracts to `registrations`",
        "--- (a new table by default) and returns it, ready for polyplug_init to return.",
        f"function M.{register}(registrations)",
        "  registrations = registrations or {}",
    ]
    for c in chosen:
        out += [
            f"  registrations[{_lua_string(c.name)}] = {{",
            f"    contract_version = {c.major},",
            "    plugin_name = M.PLUGIN_NAME,",
            f"    factory = factory_for({_lua_string(c.name)}, {_lua_string(c.key)}, {methods_table(c)}),",
            f"    functions = {c.struct_name}_functions(),",
            "  }",
        ]
    out += ["  return registrations", "end", f"M.register = M.{register}", "", "return M", ""]
    return "\n".join(out)


def write_lua(
    api: ApiSpec, plugin: str, out_dir: str | os.PathLike[str], contracts: Sequence[str] | None = None
) -> Path:
    """Write ``contracts.lua`` into ``out_dir`` (created when missing); its path.

    :raises ApiSpecError: see :func:`generate_lua`
    :raises OSError: the file cannot be written
    """
    text = generate_lua(api, plugin, contracts)
    target = Path(out_dir) / GLUE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, "utf-8")
    return target
