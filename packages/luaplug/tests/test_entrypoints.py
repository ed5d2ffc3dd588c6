"""The entry-point reader gives what ``importlib.metadata`` gives, or declines."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import zipfile
from pathlib import Path

import pytest

from luaplug import _entrypoints


def metadata_view(group: str) -> list[tuple[str, str]]:
    return [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group)]


def reader_view(group: str) -> list[tuple[str, str]] | None:
    found = _entrypoints.entry_points(group)
    return None if found is None else [(ep.name, ep.value) for ep in found]


def all_groups() -> set[str]:
    return {ep.group for dist in importlib.metadata.distributions() for ep in dist.entry_points}


def test_this_environment_every_group() -> None:
    # The test environment: wheels in site-packages plus tox's editable installs.
    groups = all_groups() | {"luaplug"}
    for group in sorted(groups):
        assert reader_view(group) == metadata_view(group), group


def test_this_environment_finds_the_installed_backends() -> None:
    found = reader_view("luaplug")
    assert found is not None
    for name, module in (("lupa", "luaplug_lupa"), ("cffi", "luaplug_cffi")):
        try:
            importlib.metadata.distribution(f"luaplug-{name}")
        except importlib.metadata.PackageNotFoundError:
            continue
        assert (name, f"{module}.plugin") in found


def _dist(where: Path, dirname: str, text: str | None) -> Path:
    d = where / dirname
    d.mkdir(parents=True)
    if text is not None:
        (d / "entry_points.txt").write_text(text, "utf-8")
    return d


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three directories as the whole of ``sys.path``."""
    dirs = [tmp_path / "first", tmp_path / "second", tmp_path / "third"]
    for d in dirs:
        d.mkdir()
    monkeypatch.setattr(sys, "path", [str(d) for d in dirs])
    return dirs


def test_layouts_agree_with_importlib_metadata(sandbox: list[Path]) -> None:
    first, second, third = sandbox
    _dist(first, "alpha-1.0.dist-info", "[luaplug]\na = alpha.plugin\n\n[console_scripts]\nx = alpha:main\n")
    # the same distribution further down sys.path is shadowed, whatever it declares
    _dist(second, "Alpha-2.0.dist-info", "[luaplug]\na = alpha_old.plugin\nold = alpha_old.extra\n")
    # names are compared normalized: Beta.Plugin == beta_plugin == beta-plugin
    _dist(first, "Beta.Plugin.egg-info", "# a comment\n[luaplug]\n  b = beta.plugin:obj.attr [extra]  \n")
    _dist(third, "beta_plugin-0.1.dist-info", "[luaplug]\nb = shadowed\n")
    # a distribution without entry points still shadows later ones
    _dist(first, "gamma-1.dist-info", None)
    _dist(second, "gamma-2.dist-info", "[luaplug]\ng = gamma.plugin\n")
    (first / "delta.egg-info").write_text("Metadata-Version: 1.0\nName: delta\n", "utf-8")  # an old egg-info file
    _dist(third, "delta-1.dist-info", "[luaplug]\nd = delta.plugin\n")
    # sections repeat; other sections and lines before any section are ignored
    _dist(third, "eps-3.dist-info", "stray = line\n[luaplug]\ne1 = e.one\n[other]\nz = z\n[luaplug]\ne2=e.two\n")
    _dist(third, "not-metadata", "[luaplug]\nn = never\n")
    for group in ("luaplug", "console_scripts", "other", "absent"):
        assert reader_view(group) == metadata_view(group), group
    assert sorted(reader_view("luaplug") or []) == [  # the order within a directory is the listing's
        ("a", "alpha.plugin"),
        ("b", "beta.plugin:obj.attr [extra]"),
        ("e1", "e.one"),
        ("e2", "e.two"),
    ]


def test_missing_and_relative_entries(sandbox: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _dist(sandbox[0], "rel-1.dist-info", "[luaplug]\nr = rel.plugin\n")
    monkeypatch.chdir(sandbox[0])
    monkeypatch.setattr(sys, "path", ["", str(sandbox[0] / "no-such-dir"), *sys.path])
    assert reader_view("luaplug") == metadata_view("luaplug") == [("r", "rel.plugin")]


def test_declines_what_it_does_not_model(sandbox: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base = list(sys.path)
    zipped = sandbox[0] / "dists.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("zz-1.dist-info/entry_points.txt", "[luaplug]\nzz = zz.plugin\n")
    monkeypatch.setattr(sys, "path", [*base, str(zipped)])
    assert _entrypoints.entry_points("luaplug") is None
    monkeypatch.setattr(sys, "path", [*base, str(sandbox[0] / "old.egg")])
    assert _entrypoints.entry_points("luaplug") is None
    monkeypatch.setattr(sys, "path", [*base, Path(sandbox[0])])
    assert _entrypoints.entry_points("luaplug") is None
    monkeypatch.setattr(sys, "path", base)
    _dist(sandbox[1], "bad-1.dist-info", "[luaplug]\nno equals sign here\n")
    assert _entrypoints.entry_points("luaplug") is None


def test_declines_when_another_finder_reports_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    class Finder:
        @staticmethod
        def find_distributions(context: object = None) -> list[object]:
            return []

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert _entrypoints.entry_points("luaplug") is None


def test_undecodable_file_is_declined(sandbox: list[Path]) -> None:
    d = _dist(sandbox[0], "latin-1.dist-info", None)
    (d / "entry_points.txt").write_bytes(b"[luaplug]\nx = caf\xe9\n")
    assert _entrypoints.entry_points("luaplug") is None


def test_load_imports_the_module_or_the_attribute() -> None:
    assert _entrypoints.EntryPoint("p", "os.path", "g").load() is os.path
    assert _entrypoints.EntryPoint("p", "os.path : join [x]", "g").load() is os.path.join
    assert _entrypoints.EntryPoint("p", "os:path.join", "g").load() is os.path.join
    with pytest.raises(ValueError, match="invalid value"):
        _entrypoints.EntryPoint("p", "not a module", "g").load()


@pytest.mark.parametrize("name", ["pkg", "Foo.Bar", "foo-bar", "foo__bar", "a.-_b", "-x-", "Zope.Interface", "a..b--c"])
def test_names_normalized_as_importlib_metadata_does(name: str) -> None:
    prepared = importlib.metadata.Prepared  # type: ignore[attr-defined]
    assert _entrypoints._normalize(name) == prepared.normalize(name)


@pytest.mark.parametrize("value", ["", "a:b:c", "mod attr", "1mod", "mod:", "mod:.x", "a..b"])
def test_invalid_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="invalid value"):
        _entrypoints.EntryPoint("p", value, "g").load()
