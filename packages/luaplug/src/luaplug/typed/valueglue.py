"""The value glue of untrusted bundles: luaplug's own Lua code between the C ABI and bundle code.

An untrusted bundle never sees ``ffi`` or an address. For each contract of its ``api.toml`` this
module writes Lua that the host prelude compiles with the real ``ffi``, in an environment of its
own (empty: everything the glue uses arrives as upvalues), and never hands to the bundle:

* a *handler table* per guest contract (``name@major``): slot ``i`` reads the arguments of
  function ``i`` from the C arg pack into Lua values, calls ``impl:<fn>(...)``, checks the result
  against the declared type and writes it to the out slot (strings into the call arena);
* a *caller* per contract (guest and host): an object whose methods take and return Lua values
  and call the contract through the HostApi.

Values: integers (64-bit ones too) and enums are Lua numbers (exact up to 2^53), floats numbers,
``bool`` booleans, ``StringView`` Lua strings (any bytes). Structs and ``Buffer`` are refused.
"""

from __future__ import annotations

from typing import Final

from ..errors import ApiSpecError
from ..ids import guest_contract_id, host_contract_id
from .layout import layout
from .spec import ApiSpec, ContractSpec, FunctionSpec
from .types import EnumType, ScalarType, TypeSpec

__all__ = ["generate_value_glue"]

_SV: Final = "luaplug_v_sv"


def _lua_string(s: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in "._-@ " else f"\\{ord(c)}" for c in s) + '"'


def _ctype(t: TypeSpec) -> str:
    return _SV if t.kind == "string" else t.ctype


def _check(c: ContractSpec, fn: FunctionSpec, path: str | None) -> None:
    for t in [p.type for p in fn.params] + ([fn.returns] if fn.returns is not None else []):
        if t.kind in ("struct", "bytes"):
            raise ApiSpecError(
                f"{c.key} {fn.name}() uses {t.name}: untrusted bundles take integers, floats, bool, "
                "StringView and enums",
                path=path,
            )


def _decoder(t: TypeSpec, expr: str) -> str:
    """A Lua expression turning a C field into the value bundle code gets."""
    if t.kind == "string":
        return f"dec_str({expr})"
    if t.kind == "bool":
        return f"({expr} == true)"
    return f"tonumber({expr})"


def _encoder(t: TypeSpec, expr: str, what: str) -> str:
    """A Lua expression checking the Lua value ``expr`` against ``t`` (the C value, strings aside)."""
    if t.kind == "bool":
        return f"enc_bool({expr}, {what})"
    if t.kind == "float":
        return f"enc_float({expr}, {what})"
    if t.kind == "string":
        return f"enc_str_check({expr}, {what})"
    scalar = t.repr if isinstance(t, EnumType) else t
    assert isinstance(scalar, ScalarType), t  # structs are refused by _check
    # the upper bound is exclusive: 2^bits bounds are exact doubles
    return f"enc_int({expr}, {scalar.lo}, {scalar.hi + 1}, {what})"


def _packs(api: ApiSpec) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(kind, contract key, function) -> (arg pack element type, its declaration or None).

    One parameter is passed as a pointer to its value, several as a struct (spec §14); the
    structs are numbered, so no two contracts' names can clash.
    """
    packs: dict[tuple[str, str, str], tuple[str, str | None]] = {}
    for c in (*api.guest_contracts, *api.host_contracts):
        for fn in c.functions:
            call = layout(fn)
            if call.kind == "single":
                packs[(c.kind, c.key, fn.name)] = (call.pointee("", _ctype), None)
            elif call.kind == "struct":
                name = f"luaplug_vp_{len(packs)}"
                packs[(c.kind, c.key, fn.name)] = (name, call.struct_decl(name, _ctype))
    return packs


def _handler(c: ContractSpec, fn: FunctionSpec, pack: str) -> list[str]:
    kind = layout(fn).kind
    name = _lua_string(fn.name)
    lines = ["    function(impl, args, out, arena, alloc)"]
    if kind != "none":
        lines.append(f'      if args == 0 then error("{c.key} {fn.name}: no arguments (null args)", 0) end')
        lines.append(f'      local a = cast("{pack}*", args)')
        if kind == "single":
            values = [_decoder(fn.params[0].type, "a[0]")]
        else:
            values = [_decoder(p.type, f"a.{p.name}") for p in fn.params]
    else:
        values = []
    call = f"invoke(impl, {name}{''.join(', ' + v for v in values)})"
    ret = fn.returns
    if ret is None:
        lines.append(f"      {call}")
    else:
        lines.append(f"      local r = {call}")
        what = _lua_string(f"{c.key} {fn.name}: result")
        if ret.kind == "string":
            lines.append(f"      enc_str_check(r, {what})")
            lines.append(f'      if out ~= 0 then write_str(cast("{_SV}*", out), r, arena, alloc) end')
        else:
            lines.append(f"      local v = {_encoder(ret, 'r', what)}")
            lines.append(f'      if out ~= 0 then cast("{ret.ctype}*", out)[0] = v end')
    lines.append("    end,")
    return lines


def _method(c: ContractSpec, fn_id: int, fn: FunctionSpec, pack: str) -> list[str]:
    names = [f"p{i}" for i in range(len(fn.params))]
    lines = [f"  m[{_lua_string(fn.name)}] = function(self{''.join(', ' + x for x in names)})"]
    lines.append("    local st = state_of(self)")
    kind = layout(fn).kind
    if kind == "none":
        lines.append("    local args = nil")
    else:
        lines.append(f'    local args = new("{pack}[1]")')
        for i, p in enumerate(fn.params):
            what = _lua_string(f"{c.key} {fn.name}: argument {p.name}")
            target = "args[0]" if kind == "single" else f"args[0].{p.name}"
            if p.type.kind == "string":
                lines.append(f"    {_encoder(p.type, names[i], what)}")
                lines.append(f"    {target}.ptr, {target}.len = {names[i]}, #{names[i]}")
            else:
                lines.append(f"    {target} = {_encoder(p.type, names[i], what)}")
    ret = fn.returns
    if ret is None:
        lines.append(f"    local r, e = call(st, {fn_id}, args, nil, nil)")
    else:
        lines.append(f'    local out = new("{_ctype(ret)}[1]")')
        lines.append(f"    local r, e = call(st, {fn_id}, args, out, function(o)")
        lines.append(f"      return {_decoder(ret, 'o[0]')}")
        lines.append("    end)")
    # Not a tail call: the frame keeps the argument strings the arg pack points into alive.
    lines.append("    return r, e")
    lines.append("  end")
    return lines


def generate_value_glue(api: ApiSpec) -> str:
    """The Lua chunk the prelude compiles for an untrusted bundle's ``api.toml``.

    The chunk is called with ``(ffi, core)`` (``core``: the helpers and builtins the prelude
    passes) and returns ``{ handlers = {[key] = {[0] = fn, ...}}, callers = {[key] = methods},
    ids = {[key] = {kind, id, major}} }``.

    :raises ApiSpecError: a contract uses a struct or ``Buffer``
    """
    for c in (*api.guest_contracts, *api.host_contracts):
        for fn in c.functions:
            _check(c, fn, api.path)
    out = [
        "-- luaplug value glue (generated; runs outside the bundle's environment)",
        "local ffi, core = ...",
        "local cast, new, cdef, tonumber = ffi.cast, ffi.new, ffi.cdef, core.tonumber",
        "local error, invoke, dec_str, write_str = core.error, core.invoke, core.dec_str, core.write_str",
        "local enc_int, enc_float, enc_bool = core.enc_int, core.enc_float, core.enc_bool",
        "local enc_str_check, call, state_of = core.enc_str_check, core.call, core.state_of",
        "local handlers, callers, ids = {}, {}, {}",
    ]
    packs = _packs(api)
    decls = [d for _, d in packs.values() if d is not None]
    if decls:
        out.append("cdef[[" + "\n".join(decls) + "]]")
    for c in api.guest_contracts:
        key = _lua_string(c.key)
        out.append(f"do local h = {{}} handlers[{key}] = h")
        for i, fn in enumerate(c.functions):
            body = _handler(c, fn, packs.get((c.kind, c.key, fn.name), ("", None))[0])
            out += [f"h[{i}] = " + body[0].strip(), *body[1:-1], "end"]
        out.append("end")
        out.append(f'ids[{key}] = {{ "guest", {guest_contract_id(c.name, c.major)}ULL, {c.major} }}')
    for c in (*api.guest_contracts, *api.host_contracts):
        key = _lua_string(c.key)
        if c.kind == "host":
            out.append(f'ids[{key}] = {{ "host", {host_contract_id(c.name, c.major)}ULL, {c.major} }}')
        out.append("do")
        out.append("  local m = {}")
        for i, fn in enumerate(c.functions):
            out += _method(c, i, fn, packs.get((c.kind, c.key, fn.name), ("", None))[0])
        out.append(f"  callers[{key}] = m")
        out.append("end")
    out.append("return { handlers = handlers, callers = callers, ids = ids }")
    return "\n".join(out) + "\n"
