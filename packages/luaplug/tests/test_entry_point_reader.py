"""The entry-point reader of backend discovery gives ``importlib.metadata``'s answer.

``importlib.metadata`` is the authority here: every case compares with
``importlib.metadata.entry_points(group=...)`` on the same ``sys.path``.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from luaplug.backend import discovery


def stdlib_answer(group: str) -> list[tuple[str, str]]:
    return [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group)]


def dist(where: Path, dirname: str, entry_points: str | None) -> Path:
    """A metadata directory ``where/dirname`` with that ``entry_points.txt`` (none: no file)."""
    info = where / dirname
    info.mkdir(parents=True)
    name = dirname.partition("-")[0]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", "utf-8")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points, "utf-8")
    return info


@pytest.fixture
def path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """An empty ``sys.path`` of the test's own (the test appends directories)."""
    entries: list[str] = []
    monkeypatch.setattr(sys, "path", entries)
    yield entries


def test_agrees_with_importlib_metadata_on_this_environment() -> None:
    groups = {ep.group for d in importlib.metadata.distributions() for ep in d.entry_points}
    assert "luaplug" in groups  # the two backends of this repository are installed
    for group in sorted(groups | {"no.such.group"}):
        assert discovery._read_entry_points(group) == stdlib_answer(group), group


def test_first_distribution_of_a_name_wins_across_and_within_paths(path: list[str], tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    dist(first, "Foo_Bar-1.0.dist-info", "[luaplug]\nfoo = foo_one\n")
    dist(second, "foo.bar-2.0.dist-info", "[luaplug]\nfoo = foo_two\nextra = foo_extra\n")
    dist(second, "other-1.0.egg-info", "[luaplug]\nother = other_mod:plugin\n")
    path += [str(tmp_path / "missing"), str(first), str(second)]
    expected = [("foo", "foo_one"), ("other", "other_mod:plugin")]
    assert stdlib_answer("luaplug") == expected
    assert discovery._read_entry_points("luaplug") == expected


def test_reads_sections_as_importlib_metadata_does(path: list[str], tmp_path: Path) -> None:
    text = (
        "before = any_section\n"
        "# a comment\n"
        "[console_scripts]\n"
        "tool = pkg.cli:main\n"
        "\n"
        "  [luaplug]  \n"
        "  spaced   =   pkg.plugin:hooks.obj [extra1, extra2]  \n"
        "# between\n"
        "eq = pkg.mod:attr=x\n"
        "[luaplug.other]\n"
        "not_ours = pkg.other\n"
        "[luaplug]\n"
        "again = pkg.again\n"
    )
    dist(tmp_path, "pkg-1.0.dist-info", text)
    dist(tmp_path, "empty-1.0.dist-info", None)
    path.append(str(tmp_path))
    expected = [("spaced", "pkg.plugin:hooks.obj [extra1, extra2]"), ("eq", "pkg.mod:attr=x"), ("again", "pkg.again")]
    assert stdlib_answer("luaplug") == expected
    assert discovery._read_entry_points("luaplug") == expected
    scripts = [("tool", "pkg.cli:main")]
    assert discovery._read_entry_points("console_scripts") == stdlib_answer("console_scripts") == scripts


def test_a_zip_on_the_path_is_left_to_importlib_metadata(path: list[str], tmp_path: Path) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 1.0\n")
        zf.writestr("zipped-1.0.dist-info/entry_points.txt", "[luaplug]\nzipped = zipped_mod\n")
    path.append(str(archive))
    assert discovery._read_entry_points("luaplug") is None
    entries = discovery._entry_points("luaplug")
    assert [name for name, _ in entries] == ["zipped"] == [name for name, _ in stdlib_answer("luaplug")]


def test_a_name_not_read_from_the_directory_name_is_left_to_importlib_metadata(path: list[str], tmp_path: Path) -> None:
    # importlib.metadata takes these names from METADATA: an upper-case suffix, an empty stem.
    for dirname in ("Upper-1.0.DIST-INFO", "-1.0.dist-info"):
        where = tmp_path / dirname.replace(".", "_")
        dist(where, dirname, "[luaplug]\nname = mod\n")
        path[:] = [str(where)]
        assert discovery._read_entry_points("luaplug") is None
        assert [name for name, _ in discovery._entry_points("luaplug")] == ["name"]


def test_another_distribution_finder_is_left_to_importlib_metadata(
    path: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist(tmp_path, "pkg-1.0.dist-info", "[luaplug]\nondisk = pkg\n")
    path.append(str(tmp_path))
    elsewhere = dist(tmp_path / "elsewhere", "extra-1.0.dist-info", "[luaplug]\nfromfinder = x\n")

    class Finder:
        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(context: object = None) -> list[importlib.metadata.Distribution]:
            return [importlib.metadata.PathDistribution(elsewhere)]

    monkeypatch.setattr(sys, "meta_path", [Finder, *sys.meta_path])
    assert discovery._read_entry_points("luaplug") is None
    assert [name for name, _ in discovery._entry_points("luaplug")] == ["fromfinder", "ondisk"]


def test_a_line_without_equals_sign_is_passed_over(path: list[str], tmp_path: Path) -> None:
    # importlib.metadata fails on the whole environment for such a line; discovery reads on.
    dist(tmp_path, "broken-1.0.dist-info", "[console_scripts]\nno equals sign\n[luaplug]\nfine = broken_mod\n")
    path.append(str(tmp_path))
    with pytest.raises((TypeError, ValueError)):
        stdlib_answer("luaplug")
    assert discovery._read_entry_points("luaplug") == [("fine", "broken_mod")]


def test_values_load_as_importlib_metadata_loads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("ep_target_mod")
    mod.outer = types.SimpleNamespace(inner="the object")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ep_target_mod", mod)
    for value in ("ep_target_mod", "ep_target_mod:outer", "ep_target_mod : outer.inner [extra]", "os.path:join"):
        ep = importlib.metadata.EntryPoint(name="x", value=value, group="luaplug")
        assert discovery._load_value(value) is ep.load(), value
    assert discovery._load_value("os.path:join") is os.path.join
    for bad in ("not a module", "mod:", "mod:a..b", ":attr"):
        with pytest.raises(ValueError, match="invalid entry point value"):
            discovery._load_value(bad)
