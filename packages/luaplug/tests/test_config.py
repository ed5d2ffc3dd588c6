"""Host configuration: ``[tool.luaplug]`` / ``luaplug.toml``, discovery and precedence."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import luaplug
from luaplug import ConfigError
from luaplug.config import ENV_HOT_RELOAD, Config, find_config, load_config, resolve_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUAPLUG_BACKEND", raising=False)
    monkeypatch.delenv(ENV_HOT_RELOAD, raising=False)


def test_pyproject_table(tmp_path: Path) -> None:
    f = tmp_path / "pyproject.toml"
    f.write_text('[project]\nname = "x"\n[tool.luaplug]\nbackend = "cffi"\nhot_reload = true\n', "utf-8")
    assert load_config(f) == Config(backend="cffi", hot_reload=True, path=f)


def test_luaplug_toml_top_level(tmp_path: Path) -> None:
    f = tmp_path / "luaplug.toml"
    f.write_text('backend = "lupa"\n', "utf-8")
    assert load_config(f) == Config(backend="lupa", hot_reload=None, path=f)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("backend = 3\n", "backend"),
        ('hot_reload = "yes"\n', "hot_reload"),
        ("hot_relaod = true\n", "hot_relaod"),
        ("backend = \n", None),
    ],
)
def test_invalid_settings_name_the_file_and_key(tmp_path: Path, text: str, key: str | None) -> None:
    f = tmp_path / "luaplug.toml"
    f.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.path == str(f)
    assert info.value.key == key


def test_pyproject_keys_are_prefixed(tmp_path: Path) -> None:
    f = tmp_path / "pyproject.toml"
    f.write_text("[tool.luaplug]\nbackend = false\n", "utf-8")
    with pytest.raises(ConfigError, match=r"key tool\.luaplug\.backend"):
        load_config(f)


def test_discovery_walks_up_and_prefers_luaplug_toml(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert find_config(deep) is None or not str(find_config(deep)).startswith(str(tmp_path))
    (tmp_path / "pyproject.toml").write_text('[tool.luaplug]\nbackend = "x"\n', "utf-8")
    assert find_config(deep) == tmp_path / "pyproject.toml"
    # a pyproject.toml without [tool.luaplug] is passed over
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "a"\n', "utf-8")
    assert find_config(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "luaplug.toml").write_text('backend = "y"\n', "utf-8")
    assert find_config(deep) == tmp_path / "a" / "luaplug.toml"
    (tmp_path / "a" / "b" / "pyproject.toml").write_text("[tool.luaplug]\nhot_reload = true\n", "utf-8")
    assert find_config(deep) == tmp_path / "a" / "b" / "pyproject.toml"


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = Config(backend="z")
    assert resolve_config(given) is given
    f = tmp_path / "luaplug.toml"
    f.write_text("hot_reload = true\n", "utf-8")
    assert resolve_config(f).hot_reload is True
    assert resolve_config(str(f)).hot_reload is True
    monkeypatch.chdir(tmp_path)
    assert resolve_config().path == f


@pytest.mark.parametrize(
    ("explicit", "env", "file", "expected"),
    [
        (True, "0", False, True),
        (False, "1", True, False),
        (None, "yes", False, True),
        (None, "off", True, False),
        (None, None, True, True),
        (None, None, None, False),
    ],
)
def test_hot_reload_precedence(
    monkeypatch: pytest.MonkeyPatch, explicit: bool | None, env: str | None, file: bool | None, expected: bool
) -> None:
    if env is not None:
        monkeypatch.setenv(ENV_HOT_RELOAD, env)
    assert Config(hot_reload=file).hot_reload_setting(explicit) is expected


def test_bad_hot_reload_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HOT_RELOAD, "maybe")
    with pytest.raises(ConfigError, match=ENV_HOT_RELOAD):
        Config().hot_reload_setting(None)


def _two_backends() -> list[str]:
    names = luaplug.available_backends()
    if len(names) < 2:
        pytest.skip("needs two available backends")
    return names


def test_runtime_backend_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _two_backends()[:2]
    f = tmp_path / "luaplug.toml"
    f.write_text(f'backend = "{second}"\nhot_reload = true\n', "utf-8")
    monkeypatch.chdir(tmp_path)
    with luaplug.Runtime() as rt:  # discovered file
        assert (rt.backend_name, rt.hot_reload, rt.config.path) == (second, True, f)
    monkeypatch.setenv("LUAPLUG_BACKEND", first)
    with luaplug.Runtime() as rt:  # the environment beats the file
        assert rt.backend_name == first
    with luaplug.Runtime(second, hot_reload=False) as rt:  # the argument beats both
        assert (rt.backend_name, rt.hot_reload) == (second, False)
    monkeypatch.delenv("LUAPLUG_BACKEND")
    with luaplug.Runtime(config=luaplug.Config()) as rt:  # an explicit empty config ignores files
        assert rt.backend_name == first and rt.hot_reload is False


def test_config_false_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _two_backends()[:2]
    (tmp_path / "luaplug.toml").write_text(f'backend = "{second}"\nhot_reload = true\n', "utf-8")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # found from the current directory upward...
    assert resolve_config().path == tmp_path / "luaplug.toml"
    assert resolve_config(False) == Config()
    with luaplug.Runtime(config=False) as rt:  # ...and ignored
        assert (rt.backend_name, rt.hot_reload, rt.config.path) == (first, False, None)
    monkeypatch.setenv(ENV_HOT_RELOAD, "1")  # the environment still applies
    with luaplug.Runtime(config=False) as rt:
        assert rt.hot_reload is True


def test_runtime_with_an_explicit_file(tmp_path: Path) -> None:
    if not luaplug.available_backends():
        pytest.skip("no backend available")
    f = tmp_path / "pyproject.toml"
    f.write_text('[tool.luaplug]\nbackend = "no-such-backend"\n', "utf-8")
    with pytest.raises(luaplug.BackendNotFoundError):
        luaplug.Runtime(config=f)


# -- passing over other projects' pyproject.toml without parsing it ----------------------------------

_PASSED_OVER = [
    "",
    '[project]\nname = "host"\n',
    '[project]\nname = "caf\xe9"\n',  # not UTF-8, and nothing about luaplug in it
    'dependencies = ["luaplug>=0.1", "luaplug-cffi"]\n',
    '[tool.mypy]\npackages = ["luaplug"]  # luaplug = here\n',
    "# [tool.luaplug] is configured elsewhere\n  # luaplug.toml\n",
    'k = "x" # [tool.luaplug]\n',
    '[tool."=".luaplug]\nbackend = "lupa"\n',  # the table tool."=".luaplug
]
_PARSED = [
    "[tool.luaplug]\n",
    '[ tool . "luaplug" ]\nbackend = "lupa"\n',
    "[[tool.luaplug]]\n",
    'tool.luaplug.backend = "lupa"\n',
    '[tool]\nluaplug = { backend = "lupa" }\n',
    'tool = { luaplug = { backend = "lupa" } }\n',
    "[tool.luaplug] # x = 1\n",
    '[tool]\n"lua\\u0070lug" = {}\n',  # an escape spells the key
    'packages = [\n  "luaplug",\n]\n',  # a value on a line of its own: left to the parser
    '[tool.luaplug]\nbackend = "caf\xe9"\n',  # not UTF-8 (encoded as latin-1 below)
]


@pytest.mark.parametrize("text", _PASSED_OVER)
def test_passed_over_without_parsing(text: str) -> None:
    from luaplug.config import _may_configure_luaplug

    assert not _may_configure_luaplug(text.encode("utf-8" if text.isascii() else "latin-1"))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    assert not isinstance(data.get("tool"), dict) or "luaplug" not in data["tool"]


@pytest.mark.parametrize("text", _PARSED)
def test_left_to_the_parser(text: str) -> None:
    from luaplug.config import _may_configure_luaplug

    assert _may_configure_luaplug(text.encode("utf-8" if text.isascii() else "latin-1"))


def test_discovery_parses_only_what_may_configure_luaplug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from luaplug import config

    parsed: list[Path] = []
    real = config._read_toml

    def spy(path: Path) -> dict[str, object]:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(config, "_read_toml", spy)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "a" / "pyproject.toml").write_text('[tool.ruff]\nsrc = ["src/luaplug"]\n', "utf-8")
    (tmp_path / "pyproject.toml").write_text('[tool.luaplug]\nbackend = "x"\n', "utf-8")
    assert find_config(deep) == tmp_path / "pyproject.toml"
    assert parsed == [tmp_path / "pyproject.toml"]


def test_the_repository_pyproject_is_passed_over() -> None:
    root = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if not root.is_file():
        pytest.skip("not a checkout of the luaplug repository")
    from luaplug.config import _may_configure_luaplug

    data = root.read_bytes()
    assert "luaplug" not in tomllib.loads(data.decode("utf-8")).get("tool", {})
    assert not _may_configure_luaplug(data)


_KEYS = ["luaplug", '"luaplug"', "'luaplug'", "tool.luaplug", 'tool . "luaplug"', "x", "tool", '"a=b".luaplug']
_VALUES = ['"luaplug"', "1", "{ luaplug = 1 }", '["luaplug", 2]', "{}", '{ backend = "luaplug" }']
_HEADERS = ["[tool]", "[tool.luaplug]", "[ tool.'luaplug' ]", "[other]", "[[tool.luaplug]]", '["tool"]']


@given(
    st.lists(
        st.one_of(
            st.sampled_from(_HEADERS),
            st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
            st.sampled_from(["# luaplug", "", "  # [tool.luaplug]"]),
        ),
        max_size=6,
    )
)
def test_never_passes_over_a_luaplug_table(lines: list[str]) -> None:
    from luaplug.config import _may_configure_luaplug

    text = "\n".join(lines) + "\n"
    try:
        tool = tomllib.loads(text).get("tool")
    except tomllib.TOMLDecodeError:
        return
    if isinstance(tool, dict) and "luaplug" in tool:
        assert _may_configure_luaplug(text.encode("utf-8")), text
