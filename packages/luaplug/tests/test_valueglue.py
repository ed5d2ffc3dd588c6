"""The value glue of untrusted bundles (luaplug.typed.valueglue): what it accepts and emits."""

from __future__ import annotations

import pytest

from luaplug.errors import ApiSpecError
from luaplug.typed import parse_api
from luaplug.typed.valueglue import generate_value_glue

lupa = pytest.importorskip("lupa.luajit21")

TWO = """
[[guest_contract]]
name = "a.b"
version = "1.0.0"
[[guest_contract.functions]]
name = "f"
params = [{ name = "x", type = "i32" }, { name = "y", type = "StringView" }]
return = "u64"
[[guest_contract.functions]]
name = "empty"

[[guest_contract]]
name = "a_b"
version = "1.0.0"
[[guest_contract.functions]]
name = "f"
params = [{ name = "x", type = "f64" }, { name = "y", type = "bool" }]

[[host_contract]]
name = "a.b"
version = "1.0.0"
[[host_contract.functions]]
name = "f"
params = [{ name = "p", type = "u8" }, { name = "q", type = "u8" }]
"""


def compiles(text: str) -> bool:
    check = lupa.LuaRuntime().eval("function(s) local f, err = loadstring(s) return f ~= nil, err end")
    ok, err = check(text)
    assert ok, err
    return bool(ok)


def test_every_contract_gets_its_own_arg_pack() -> None:
    text = generate_value_glue(parse_api(TWO))
    assert compiles(text)
    decls = [line for line in text.splitlines() if "typedef struct luaplug_vp_" in line]
    names = [d.split()[2] for d in decls]
    assert len(names) == 3 and len(set(names)) == 3  # a.b / a_b / the host a.b: no clash


def test_an_empty_api_is_glue_without_contracts() -> None:
    text = generate_value_glue(parse_api(""))
    assert compiles(text)
    assert "handlers[" not in text


@pytest.mark.parametrize("t", ["Buffer", "P"])
def test_structs_and_buffers_are_refused(t: str) -> None:
    api = parse_api(
        '[[types]]\nname = "P"\nfields = [{ name = "x", type = "i32" }]\n'
        '[[guest_contract]]\nname = "s.S"\nversion = "1.0.0"\n'
        f'[[guest_contract.functions]]\nname = "f"\nreturn = "{t}"\n'
    )
    with pytest.raises(ApiSpecError, match="untrusted bundles take"):
        generate_value_glue(api)
