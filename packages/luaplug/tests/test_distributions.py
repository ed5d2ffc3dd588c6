"""The sdists and wheels of luaplug, luaplug-lupa and luaplug-cffi, as a packager gets them.

Run by ``tox -e packaging`` (``scripts/offline_build.sh``), which builds the distributions,
installs the wheels into a fresh venv and sets ``LUAPLUG_DIST_DIR`` to a directory holding
``sdist/*.tar.gz`` and ``wheels/*.whl``; skipped without it.
"""

from __future__ import annotations

import email
import email.message
import os
import sysconfig
import tarfile
import zipfile
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

import luaplug

DIST_DIR = os.environ.get("LUAPLUG_DIST_DIR", "")
if not DIST_DIR:
    pytest.skip("LUAPLUG_DIST_DIR is not set (tox -e packaging sets it)", allow_module_level=True)

VERSION = luaplug.__version__
#: distribution -> import package
PACKAGES = {"luaplug": "luaplug", "luaplug-lupa": "luaplug_lupa", "luaplug-cffi": "luaplug_cffi"}

CORE_DATA = {
    "luaplug/py.typed",
    "luaplug/sdk/abi.lua",
    "luaplug/sdk/polyplug_abi.lua",
    "luaplug/sdk/polyplug_guest.lua",
    "luaplug/lua/luaplug_host.lua",
    "luaplug/lua/luaplug_harden.lua",
    "luaplug/backend/luaplug_entry.h",
    "luaplug/examples/counter/main.lua",
    "luaplug/examples/counter/manifest.toml",
    "luaplug/examples/greeter/main.lua",
    "luaplug/examples/greeter/manifest.toml",
}


def _one(pattern: str) -> Path:
    found = sorted(Path(DIST_DIR).glob(pattern))
    assert len(found) == 1, f"{pattern}: {[p.name for p in found]}"
    return found[0]


@cache
def wheel_files(dist: str) -> dict[str, bytes]:
    """Every file of ``dist``'s wheel, by its path in the wheel."""
    with zipfile.ZipFile(_one(f"wheels/{PACKAGES[dist]}-{VERSION}-*.whl")) as zf:
        return {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}


def sdists(dist: str) -> list[Path]:
    """``dist``'s sdists (any version). They are named by the normalized name (``luaplug_cffi-*``,
    PEP 625: setuptools 69.3 and later) or by the project name (``luaplug-cffi-*``: older
    setuptools, as Debian 12's)."""
    found = []
    for path in Path(DIST_DIR, "sdist").glob("*.tar.gz"):
        name, _, _version = path.name.removesuffix(".tar.gz").rpartition("-")
        if name.replace("-", "_") == PACKAGES[dist]:
            found.append(path)
    return sorted(found)


def sdist_path(dist: str) -> Path:
    """``dist``'s one sdist, at the lockstep version."""
    found = sdists(dist)
    assert len(found) == 1, f"{dist}: {[p.name for p in found]}"
    assert found[0].name.removesuffix(".tar.gz").endswith(f"-{VERSION}"), found[0].name
    return found[0]


@cache
def sdist_files(dist: str) -> dict[str, bytes]:
    """Every regular file of ``dist``'s sdist, by its path below the top directory."""
    path = sdist_path(dist)
    files: dict[str, bytes] = {}
    with tarfile.open(path) as tf:
        for member in tf.getmembers():
            top, _, rest = member.name.partition("/")
            assert top == path.name.removesuffix(".tar.gz"), member.name
            if member.isfile():
                f = tf.extractfile(member)
                assert f is not None
                files[rest] = f.read()
    return files


def metadata(dist: str) -> email.message.Message:
    raw = wheel_files(dist)[f"{PACKAGES[dist]}-{VERSION}.dist-info/METADATA"]
    return email.message_from_bytes(raw)


def _metadata_version(meta: email.message.Message) -> tuple[int, ...]:
    return tuple(int(part) for part in str(meta["Metadata-Version"]).split("."))


def package_files(dist: str) -> set[str]:
    """The wheel's files outside its ``.dist-info``."""
    return {name for name in wheel_files(dist) if ".dist-info/" not in name}


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_one_sdist_and_one_wheel_at_the_lockstep_version(dist: str) -> None:
    sdist_path(dist)
    _one(f"wheels/{PACKAGES[dist]}-*.whl")
    assert metadata(dist)["Version"] == VERSION
    assert sdist_files(dist)["PKG-INFO"].decode().count(f"\nVersion: {VERSION}\n") == 1


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_wheel_holds_only_its_package(dist: str) -> None:
    package = PACKAGES[dist]
    for name in wheel_files(dist):
        top = PurePosixPath(name).parts[0]
        assert top in (package, f"{package}-{VERSION}.dist-info"), name


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_nothing_from_the_test_trees_is_shipped(dist: str) -> None:
    """Tests ship only as the conformance kit (``luaplug/testing/``)."""
    for name in wheel_files(dist):
        path = PurePosixPath(name)
        assert "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo", ".o"), name
        if path.parts[:2] == ("luaplug", "testing"):
            continue
        assert not {"tests", "test", "integration", "bundles"} & set(path.parts), name
        assert not path.name.startswith("test_") and path.name != "conftest.py", name


def test_core_wheel_ships_the_conformance_kit() -> None:
    """``pytest --pyargs luaplug.testing --luaplug-backend NAME`` needs the kit's cases, its
    conftest, its bundles and the pytest plugin that registers the option."""
    files = package_files("luaplug")
    assert {
        "luaplug/testing/__init__.py",
        "luaplug/testing/conftest.py",
        "luaplug/testing/plugin.py",
        "luaplug/testing/fixtures.py",
        "luaplug/testing/test_dispatch.py",
        "luaplug/testing/bundles/adder/manifest.toml",
        "luaplug/testing/bundles/adder/main.lua",
    } <= files
    bundles_in_sdist = {n.removeprefix("src/") for n in sdist_files("luaplug") if "/testing/bundles/" in n}
    assert "luaplug/testing/bundles/adder/main.lua" in bundles_in_sdist
    assert bundles_in_sdist <= files
    entry_points = wheel_files("luaplug")[f"luaplug-{VERSION}.dist-info/entry_points.txt"].decode()
    assert "[pytest11]\nluaplug = luaplug.testing.plugin\n" in entry_points


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_wheel_ships_what_the_sdist_has(dist: str) -> None:
    """Every file of the sdist's ``src/<package>/`` is in the wheel (each backend's compiled
    module adds its .so)."""
    package = PACKAGES[dist]
    in_sdist = {name.removeprefix("src/") for name in sdist_files(dist) if name.startswith(f"src/{package}/")}
    in_sdist.discard(f"{package}/.gitignore")
    assert in_sdist - package_files(dist) == set()
    extra = package_files(dist) - in_sdist
    compiled = {"luaplug-cffi": "luaplug_cffi/_native", "luaplug-lupa": "luaplug_lupa/_entry"}.get(dist)
    assert extra == ({f for f in extra if compiled and f.startswith(compiled) and f.endswith(".so")})


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_license_readme_classifiers_and_typing(dist: str) -> None:
    package = PACKAGES[dist]
    files = wheel_files(dist)
    meta = metadata(dist)
    # License-File paths are relative to .dist-info/licenses/ from core metadata 2.4 (PEP 639) on,
    # to .dist-info/ before it (setuptools < 77 writes 2.1).
    assert meta.get_all("License-File") == ["LICENSE"]
    licenses = "licenses/" if _metadata_version(meta) >= (2, 4) else ""
    license_text = files[f"{package}-{VERSION}.dist-info/{licenses}LICENSE"].decode()
    assert license_text.startswith("MIT License") and "luaplug authors" in license_text
    assert sdist_files(dist)["LICENSE"].decode() == license_text
    assert f"{package}/py.typed" in files
    # The free-text License field: the SPDX License-Expression needs setuptools>=77 (see setup.cfg).
    assert meta["License"] == "MIT"
    assert meta["License-Expression"] is None
    assert meta["Description-Content-Type"] == "text/markdown"
    readme = sdist_files(dist)["README.md"].decode()
    assert readme.startswith(f"# {dist}") and readme.strip() in str(meta.get_payload())
    classifiers = meta.get_all("Classifier") or []
    assert {"Typing :: Typed", "Programming Language :: Lua", "Programming Language :: Python :: 3"} <= set(classifiers)


def test_core_wheel_ships_sdk_prelude_and_examples() -> None:
    assert package_files("luaplug") >= CORE_DATA
    entry_points = wheel_files("luaplug")[f"luaplug-{VERSION}.dist-info/entry_points.txt"].decode()
    assert "[console_scripts]\nluaplug = luaplug.cli:main\n" in entry_points
    meta = metadata("luaplug")
    assert {"lupa", "cffi", "all"} <= set(meta.get_all("Provides-Extra") or [])


@pytest.mark.parametrize("dist", ["luaplug-lupa", "luaplug-cffi"])
def test_backend_wheel_registers_its_entry_point(dist: str) -> None:
    name = dist.removeprefix("luaplug-")
    entry_points = wheel_files(dist)[f"{PACKAGES[dist]}-{VERSION}.dist-info/entry_points.txt"].decode()
    assert f"[luaplug]\n{name} = {PACKAGES[dist]}.plugin\n" in entry_points


def test_core_wheel_is_pure() -> None:
    assert _one("wheels/luaplug-[0-9]*.whl").name.endswith("-py3-none-any.whl")


def test_lupa_distributions_carry_the_c_entry() -> None:
    """The sdist has the C source and no build product; the wheel (built where a C
    compiler is, as here) has the compiled entry and is per platform."""
    sdist = sdist_files("luaplug-lupa")
    assert {"setup.py", "src/luaplug_lupa/_entry.c", "src/luaplug_lupa/_entry.pyi"} <= set(sdist)
    files = wheel_files("luaplug-lupa")
    assert [n for n in files if ".so" in PurePosixPath(n).suffixes] == [
        n for n in files if n.startswith("luaplug_lupa/_entry") and n.endswith(".so")
    ]
    assert any(n.startswith("luaplug_lupa/_entry") and n.endswith(".so") for n in files)
    assert not _one("wheels/luaplug_lupa-*.whl").name.endswith("-none-any.whl")


def test_cffi_sdist_has_the_c_sources_and_no_build_products() -> None:
    files = sdist_files("luaplug-cffi")
    assert {"setup.py", "pyproject.toml", "src/luaplug_cffi/_build.py", "src/luaplug_cffi/lp_core.c"} <= set(files)
    assert "src/luaplug_cffi/_native.c" not in files
    for name in files:
        assert not name.endswith((".so", ".o", ".pyc")), name


def test_cffi_wheel_has_the_compiled_module_and_no_copy_of_luajit() -> None:
    files = wheel_files("luaplug-cffi")
    native = [name for name in files if name.startswith("luaplug_cffi/_native") and name.endswith(".so")]
    assert len(native) == 1, native
    assert [name for name in files if ".so" in PurePosixPath(name).suffixes] == native
    assert not any("luajit" in name.lower() for name in files), "a copy of LuaJIT in the wheel"
    assert b"Root-Is-Purelib: false" in files[f"luaplug_cffi-{VERSION}.dist-info/WHEEL"]
    assert not _one("wheels/luaplug_cffi-*.whl").name.endswith("-none-any.whl")


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_sdist_carries_license_readme_and_tests(dist: str) -> None:
    files = sdist_files(dist)
    assert {"LICENSE", "README.md", "PKG-INFO", "pyproject.toml", "setup.cfg"} <= set(files)
    assert any(name.startswith("tests/test_") and name.endswith(".py") for name in files)
    for name in files:
        assert "__pycache__" not in name and not name.endswith((".pyc", ".so", ".o")), name


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_the_tests_run_against_the_installed_wheels(dist: str) -> None:
    """This very run imports the packages from site-packages, with every file of their wheels."""
    module = __import__(PACKAGES[dist])
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    where = Path(module.__file__ or "").resolve().parent
    assert site & set(where.parents), f"{dist} imported from {where}, not from site-packages {site}"
    installed = {p.relative_to(where.parent).as_posix() for p in where.rglob("*") if p.is_file()}
    assert package_files(dist) <= installed


def test_installed_sdk_is_the_shipped_one() -> None:
    assert {p.name for p in luaplug.sdk_path().glob("*.lua")} == {
        PurePosixPath(name).name for name in CORE_DATA if name.startswith("luaplug/sdk/")
    }
