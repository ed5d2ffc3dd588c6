"""The ``polyplug_init`` failure cases of spec §3-§4, shared by the luaplug suite and the
reference runs: each with the spec's text (``{b}``: the chunk name)."""

from __future__ import annotations

GOOD_ENTRY = """{
      factory = function(host) return {} end,
      functions = { [0] = function(_self, _args, out) require("ffi").cast("int32_t*", out)[0] = 5 end },
    }"""


def init_returning(body: str) -> str:
    return f"function polyplug_init(host, ctx)\n  {body}\nend\n"


def good_registrations(status: str) -> str:
    return init_returning(f'return {{ ["x.Good"] = {GOOD_ENTRY} }}, {status}')


# (id, source, exact text or None, prefix, substring the text must contain)
CASES: list[tuple[str, str, str | None, str, str]] = [
    ("no_init", "local x = 1\n", "Lua plugin missing polyplug_init function: bundle={b}", "", ""),
    ("init_not_a_function", "polyplug_init = 42\n", "Lua plugin missing polyplug_init function: bundle={b}", "", ""),
    (
        "returns_nothing",
        init_returning(""),
        "Lua polyplug_init failed: error converting Lua nil to table",
        "",
        "",
    ),
    (
        "returns_one_table",
        init_returning("return {}"),
        "Lua polyplug_init failed: error converting Lua nil to table",
        "",
        "",
    ),
    (
        "status_not_a_table",
        init_returning('return { ["x.Good"] = {} }, 0'),
        "Lua polyplug_init failed: error converting Lua integer to table",
        "",
        "",
    ),
    (
        "status_a_float",
        init_returning('return { ["x.Good"] = {} }, 1.5'),
        "Lua polyplug_init failed: error converting Lua number to table",
        "",
        "",
    ),
    (
        "registrations_a_cdata",
        init_returning('return require("ffi").new("int[1]"), {}'),
        "Lua polyplug_init failed: error converting Lua other to table",
        "",
        "",
    ),
    (
        "raises",
        init_returning('error("init exploded")'),
        None,
        "Lua polyplug_init failed: runtime error: ",
        "init exploded",
    ),
    (
        "code_with_message",
        init_returning('return {}, { code = 7, message = "the guest says no" }'),
        "the guest says no",
        "",
        "",
    ),
    (
        "code_without_message",
        init_returning("return {}, { code = 7 }"),
        "Lua polyplug_init returned error code 7",
        "",
        "",
    ),
    (
        "code_with_empty_message",
        init_returning('return {}, { code = 3, message = "" }'),
        "Lua polyplug_init returned error code 3",
        "",
        "",
    ),
    (
        "zero_contracts",
        init_returning("return {}, { code = 0 }"),
        "Lua plugin registered no contracts: polyplug_init returned an empty registrations table",
        "",
        "",
    ),
    (
        "registration_not_a_table",
        init_returning('return { ["x.C"] = 5 }, { code = 0 }'),
        "Lua handlers iteration error: error converting Lua integer to table",
        "",
        "",
    ),
    (
        "registration_key_a_boolean",
        init_returning("return { [true] = {} }, { code = 0 }"),
        "Lua handlers iteration error: error converting Lua boolean to String (expected string or number)",
        "",
        "",
    ),
    (
        "missing_functions",
        init_returning('return { ["x.C"] = { factory = function() return {} end } }, { code = 0 }'),
        "Lua handlers error: missing functions table for contract 'x.C': error converting Lua nil to table",
        "",
        "",
    ),
    (
        "non_function_slot",
        init_returning(
            'return { ["x.C"] = { factory = function() return {} end,'
            " functions = { [0] = function() end, [1] = 42 } } }, { code = 0 }"
        ),
        "Lua function slot 1 error for contract 'x.C': error converting Lua integer to function",
        "",
        "",
    ),
    (
        "missing_factory",
        init_returning('return { ["x.C"] = { functions = { [0] = function() end } } }, { code = 0 }'),
        "Lua handlers error: contract 'x.C' needs a `factory` function: error converting Lua nil to function",
        "",
        "",
    ),
    (
        "factory_raises",
        init_returning(
            'return { ["x.C"] = { factory = function() error("factory exploded") end,'
            " functions = { [0] = function() end } } }, { code = 0 }"
        ),
        None,
        "factory for contract 'x.C' failed building the default instance: runtime error: ",
        "factory exploded",
    ),
    ("syntax_error", "function polyplug_init(\n", None, "Lua script load failed for {b}: syntax error: ", ""),
    (
        "chunk_raises",
        'error("chunk exploded")\n',
        None,
        "Lua script load failed for {b}: runtime error: ",
        "chunk exploded",
    ),
]
