"""The fast manifest reader reads what it accepts exactly as tomllib does, and refuses the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from luaplug import _simpletoml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


REPO = Path(__file__).resolve().parents[3]


def same_as_tomllib(text: str) -> bool:
    """Whether the fast reader agrees with tomllib (or declines)."""
    fast = _simpletoml.loads(text)
    if fast is None:
        return True
    try:
        return fast == tomllib.loads(text) and all(
            type(a) is type(b) for a, b in zip(_flat(fast), _flat(tomllib.loads(text)), strict=True)
        )
    except tomllib.TOMLDecodeError:
        return False  # accepted something tomllib refuses


def _flat(d: object) -> list[object]:
    if isinstance(d, dict):
        return [x for k in sorted(d) for x in [k, *_flat(d[k])]]
    if isinstance(d, list):
        return [x for v in d for x in _flat(v)]
    return [d]


def test_every_manifest_of_the_repository() -> None:
    manifests = list(REPO.glob("integration/**/manifest.toml")) + list(REPO.glob("packages/**/manifest.toml"))
    if not manifests:
        pytest.skip("not a checkout of the luaplug repository")
    read = 0
    for m in manifests:
        text = m.read_text("utf-8")
        assert same_as_tomllib(text), m
        read += _simpletoml.loads(text) is not None
    assert read >= len(manifests) // 2  # the fast path is the common one


@pytest.mark.parametrize(
    "text",
    [
        'a = "x"\na = "y"\n',  # duplicate key
        "[t]\n[t]\n",  # table twice
        "a = 1\n[a]\n",  # table over a key
        'a = "x\\ty"\n',  # escapes: tomllib's
        "a = 1_000\n",
        "a = 0x10\n",
        "a = 01\n",
        "a = 1.5\n",
        'a = [1, "x"]\n',
        "a = [\n1]\n",
        "a.b = 1\n",
        "a = 'lit'\n",
        'a = "x" junk\n',
        'a = "\x01"\n',
        "# comment \x01\n",
        "# comment \x7f\n",  # DEL: a control character to TOML
        "a = 1 # comment \x7f\n",
        "a = 1\rb = 2\n",
        "\ufeffa = 1\n",
        "a = [1,,2]\n",
        "a = [,]\n",
        "= 1\n",
    ],
)
def test_declines_or_agrees_on_edge_cases(text: str) -> None:
    assert same_as_tomllib(text)


try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - distributions may build without it
    hypothesis = None

if hypothesis is not None:
    _key = st.one_of(
        st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6).map(lambda s: f'"{s}"'),
    )
    _scalar = st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
        st.sampled_from(["true", "false", "+0", "-0", "+7", "01", "1_0", "0x1f", "1.0", "inf"]),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8).map(lambda s: f'"{s}"'),
    )
    _value = st.one_of(_scalar, st.lists(_scalar, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"))
    _line = st.one_of(
        st.tuples(_key, _value, st.sampled_from(["", " # c", "\t#x"])).map(lambda t: f"{t[0]} = {t[1]}{t[2]}"),
        st.from_regex(r"\[ ?[a-z_]{1,6} ?\]", fullmatch=True),
        st.sampled_from(["", "# note", "   ", "\t# x"]),
    )

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(st.lists(_line, max_size=8), st.sampled_from(["\n", "\r\n"]))
    def test_generated_manifests(lines: list[str], newline: str) -> None:
        assert same_as_tomllib(newline.join(lines) + newline)
