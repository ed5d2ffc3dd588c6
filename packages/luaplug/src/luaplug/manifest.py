"""``manifest.toml`` parsing and validation (spec §1, runtime-semantics "Manifest").

Everything is validated here, before any Lua runs; each problem raises
:class:`~luaplug.ManifestError` naming the file and the key.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._keys import AUTHORING, close_matches, unknown_keys
from .errors import LoadError, ManifestError
from .events import emit
from .ids import bundle_id, guest_contract_id

if TYPE_CHECKING:
    from .registry import Registration

__all__ = [
    "BundleSource",
    "BytesSource",
    "CodeSource",
    "DependencyIndex",
    "Dependency",
    "Manifest",
    "PathSource",
    "ProvidedContract",
    "declared_contract_ids",
    "depends_on",
    "load",
    "parse",
    "platform_key",
    "read_bytes",
    "unregistered_provides",
    "toml_reader",
]

MANIFEST_NAME = "manifest.toml"
_U64_MAX = (1 << 64) - 1
_VERSION_RE = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_log = logging.getLogger("luaplug.manifest")
#: Every key a manifest may have at its top level (others are reported, then ignored).
KNOWN_KEYS: tuple[str, ...] = (
    "name",
    "id",
    "version",
    "loader",
    "file",
    "provides",
    "function_count",
    "needs_reinit_on_dep_reload",
    "bundle_dependencies",
    "dependency",
    "api",
)
#: Every key of a ``[[dependency]]`` table.
DEPENDENCY_KEYS: tuple[str, ...] = ("kind", "contract", "min_version", "contract_id", "bundle", "bundle_id")


@dataclass(frozen=True)
class ProvidedContract:
    """One ``provides`` entry: ``name``, ``name@major`` or ``name@M.m.p``."""

    name: str
    major: int

    @property
    def contract_id(self) -> int:
        return guest_contract_id(self.name, self.major)


@dataclass(frozen=True)
class Dependency:
    """One ``[[dependency]]`` table."""

    kind: str
    contract: str = ""
    min_version: tuple[int, int, int] = (0, 0, 0)
    contract_id: int | None = None
    bundle: str = ""
    bundle_id: int | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated bundle manifest.

    :ivar path: the bundle directory
    :ivar manifest_path: the ``manifest.toml`` file (or a pseudo path for in-memory bundles)
    :ivar file: the entry file for this platform, relative to :attr:`path` ("" when absent)
    :ivar warnings: one text per unknown key (file, key and the nearest known key)
    """

    name: str
    id: int
    loader: str
    file: str
    path: Path
    manifest_path: Path
    version: tuple[int, int, int] = (0, 0, 0)
    provides: tuple[ProvidedContract, ...] = ()
    function_count: Mapping[str, int] = field(default_factory=dict)
    needs_reinit_on_dep_reload: bool = False
    dependencies: tuple[Dependency, ...] = ()
    bundle_dependencies: tuple[str, ...] = ()
    #: the ``api.toml`` of the bundle's contracts, relative to :attr:`path` ("" when absent);
    #: untrusted loads need it (docs: untrusted mode)
    api: str = ""
    warnings: tuple[str, ...] = ()

    @classmethod
    def in_memory(cls, name: str, *, loader: str = "lua") -> Manifest:
        """The manifest of an in-memory (code / bytes) bundle called ``name``.

        :raises LoadError: ``name`` is empty or not encodable as UTF-8
        """
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LoadError(ascii(name), "bundle names must be UTF-8 text") from exc
        if not name:
            raise LoadError(name, "bundle names must not be empty")
        return cls(
            name=name,
            id=bundle_id(name),
            loader=loader,
            file="",
            path=Path("."),
            manifest_path=Path(f"<memory:{name}>"),
        )


def platform_key() -> str:
    """This machine's ``<os>.<arch>`` key for platform ``file`` tables."""
    import platform  # only platform ``file`` tables need it

    osname = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    if osname.startswith("linux"):
        osname = "linux"
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return f"{osname}.{arch}"


def load(path: str | Path) -> Manifest:
    """Read and validate the manifest of the bundle at ``path``.

    :param path: the bundle directory, its ``manifest.toml``, or any file inside it
    :raises ManifestError: when the file is missing, unparsable or invalid
    """
    # Strings and one open() on the hot path (every load and reload reads a manifest);
    # Path() once, for its normal form (error texts show it).
    p = str(path) if isinstance(path, Path) else str(Path(path))
    base = os.path.basename(p)
    if base == MANIFEST_NAME or (os.path.splitext(base)[1] == ".toml" and os.path.isfile(p)):
        mpath = p
    else:
        mpath = _child(p, MANIFEST_NAME)
    try:
        try:
            raw = read_bytes(mpath)
        except NotADirectoryError:  # a file of the bundle was named: the manifest is beside it
            mpath = _child(os.path.dirname(p), MANIFEST_NAME)
            raw = read_bytes(mpath)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest parse error for {mpath}: file not found", path=mpath) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ManifestError(f"manifest parse error for {mpath}: {exc}", path=mpath) from exc
    return _parse_cached(text, mpath)


def _child(directory: str, name: str) -> str:
    """``str(Path(directory) / name)`` for a ``directory`` in pathlib's normal form."""
    return name if directory in ("", ".") else os.path.join(directory, name)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, manifest_path: str) -> Manifest:
    # A reload reads the manifest again; unchanged text gives the same (frozen) Manifest.
    return parse(text, manifest_path)


def parse(text: str, manifest_path: str | Path) -> Manifest:
    """Validate manifest ``text`` read from ``manifest_path`` (in the reference order)."""
    from . import _simpletoml  # its patterns are compiled by the first parse, not at import

    mpath = Path(manifest_path)
    data = _simpletoml.loads(text)  # the common simple form; None: tomllib reads it
    if data is None:
        toml = toml_reader()

        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as exc:
            raise ManifestError(f"manifest parse error for {mpath}: {exc}", path=str(mpath)) from exc
        except RecursionError:  # arrays or inline tables nested past the parser's depth
            raise _too_deep(mpath) from None
    try:
        manifest = _Validator(data, mpath).run()
    except RecursionError:  # dotted keys nesting a platform `file` table past Python's depth
        raise _too_deep(mpath) from None
    for text in manifest.warnings:  # deferred when a runtime lock is held (a reload reads it)
        emit(_log, logging.WARNING, "%s", text, extra=dict(AUTHORING))
    return manifest


def _too_deep(mpath: Path) -> ManifestError:
    return ManifestError(f"manifest parse error for {mpath}: values nested too deeply", path=str(mpath))


class _Validator:
    def __init__(self, data: dict[str, Any], mpath: Path) -> None:
        self.data = data
        self.mpath = mpath

    def fail(self, key: str, reason: str) -> ManifestError:
        return ManifestError(
            f"manifest parse error for {self.mpath}: key `{key}`: {reason}", path=str(self.mpath), key=key
        )

    def run(self) -> Manifest:
        name = self.data.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail("name", "required non-empty string")
        bid = self.parse_u64("id", self.data.get("id"), required=True)
        if bid == 0:
            raise self.fail("id", "must be non-zero")
        expected = bundle_id(name)
        if bid != expected:
            raise ManifestError(
                f'bundle "{name}" tampered with bundle_id: expected={expected:#018x}, found={bid:#018x}',
                path=str(self.mpath),
                key="id",
            )
        provides = tuple(self.parse_provides())
        bundle_deps = self.parse_bundle_dependencies()
        deps = tuple(self.parse_dependencies())
        loader = self.data.get("loader")
        if loader is None and "runtime" in self.data:
            raise self.fail("loader", "missing (the older `runtime` key is not accepted)")
        if not isinstance(loader, str) or not loader:
            raise self.fail("loader", "required non-empty string")
        file = self.parse_file()
        version = self.parse_version("version", self.data.get("version", ""))
        if provides and "version" not in self.data:
            raise self.fail("version", "required when `provides` is present")
        fcount = self.data.get("function_count", {})
        if not isinstance(fcount, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in fcount.items()
        ):
            raise self.fail("function_count", 'expected a table of "contract@major" = count')
        found = unknown_keys(self.data, KNOWN_KEYS, "", str(self.mpath))
        for i, d in enumerate(self.data.get("dependency", [])):
            found += unknown_keys(d, DEPENDENCY_KEYS, f"dependency[{i}]", str(self.mpath))
        reinit = self.data.get("needs_reinit_on_dep_reload", False)
        if not isinstance(reinit, bool):
            raise self.fail("needs_reinit_on_dep_reload", "expected a boolean")
        api = self.data.get("api", "")
        if not isinstance(api, str):
            raise self.fail("api", "expected a path (string) relative to the bundle directory")
        if api:
            self.check_relative_key("api", api)
        return Manifest(
            api=api,
            name=name,
            id=bid,
            loader=loader,
            file=file,
            path=self.mpath.parent,
            manifest_path=self.mpath,
            version=version,
            provides=provides,
            function_count=dict(fcount),
            needs_reinit_on_dep_reload=reinit,
            dependencies=deps,
            bundle_dependencies=bundle_deps,
            warnings=tuple(found),
        )

    def parse_u64(self, key: str, value: object, *, required: bool = False) -> int:
        if value is None:
            if required:
                raise self.fail(key, "required")
            return 0
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
            except ValueError:
                raise self.fail(key, f"not an unsigned 64-bit integer: {text!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "expected an unsigned 64-bit integer")
        if value < 0:
            value &= _U64_MAX  # TOML stores ids above i64::MAX as their two's complement
        if value > _U64_MAX:
            raise self.fail(key, "out of the unsigned 64-bit range")
        return value

    def parse_version(self, key: str, value: object) -> tuple[int, int, int]:
        if not isinstance(value, str):
            raise self.fail(key, 'expected a "x.y.z" string')
        if value == "":
            return (0, 0, 0)
        m = _VERSION_RE.match(value.strip())
        if m is None:
            raise self.fail(key, f'expected a "x.y.z" string, found {value!r}')
        return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))

    def parse_provides(self) -> list[ProvidedContract]:
        raw = self.data.get("provides", [])
        if not isinstance(raw, list):
            raise self.fail("provides", "expected a list of strings")
        out = []
        for spec in raw:
            if not isinstance(spec, str) or not spec:
                raise self.fail("provides", f"invalid contract spec {spec!r}")
            name, _, ver = spec.partition("@")
            if not name:
                raise self.fail("provides", f"invalid contract spec {spec!r}")
            major = self.parse_version("provides", ver)[0] if ver else 1
            out.append(ProvidedContract(name, major))
        return out

    def parse_bundle_dependencies(self) -> tuple[str, ...]:
        raw = self.data.get("bundle_dependencies", [])
        if not isinstance(raw, list) or not all(isinstance(s, str) and s and not s.startswith("@") for s in raw):
            raise self.fail("bundle_dependencies", 'expected a list of "name" or "name@version" strings')
        for spec in raw:
            _, _, ver = spec.partition("@")
            if ver:
                self.parse_version("bundle_dependencies", ver)
        return tuple(raw)

    def parse_dependencies(self) -> list[Dependency]:
        raw = self.data.get("dependency", [])
        if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
            raise self.fail("dependency", "expected [[dependency]] tables")
        out = []
        for d in raw:
            kind = d.get("kind", "contract")
            if kind not in ("contract", "bundle"):
                raise self.fail("dependency.kind", f'expected "contract" or "bundle", found {kind!r}')
            contract = d.get("contract", "")
            if not isinstance(contract, str) or (kind == "contract" and not contract):
                raise self.fail("dependency.contract", "required contract name")
            minv = self.parse_version("dependency.min_version", d.get("min_version", ""))
            cid = None
            if "contract_id" in d:
                cid = self.parse_u64("dependency.contract_id", d["contract_id"])
                want = guest_contract_id(contract, minv[0])
                if cid != want:
                    raise self.fail(
                        "dependency.contract_id",
                        f"{cid:#018x} does not match guest_contract_id({contract}@{minv[0]}) = {want:#018x}",
                    )
            bundle = d.get("bundle", "")
            if not isinstance(bundle, str):
                raise self.fail("dependency.bundle", "expected a string")
            bid = self.parse_u64("dependency.bundle_id", d["bundle_id"]) if "bundle_id" in d else None
            out.append(Dependency(kind, contract, minv, cid, bundle, bid))
        return out

    def parse_file(self) -> str:
        return self.check_relative(self.parse_file_entry())

    def check_relative(self, file: str) -> str:
        return self.check_relative_key("file", file)

    def check_relative_key(self, key: str, file: str) -> str:
        # The file lives inside the bundle directory: a path that leaves it is
        # refused before anything is read (the loader checks symlinks when it reads).
        parts = file.replace("\\", "/").split("/")
        if os.path.isabs(file) or file.startswith(("/", "\\")) or os.path.splitdrive(file)[0]:
            raise self.fail(key, f"{file!r} is absolute: it must be a path inside the bundle directory")
        if ".." in parts:
            raise self.fail(key, f"{file!r} leaves the bundle directory (`..`)")
        return file

    def parse_file_entry(self) -> str:
        raw = self.data.get("file", "")
        if isinstance(raw, str):
            return raw
        if isinstance(raw, dict):
            flat = dict(_flatten(raw))
            key = platform_key()
            if key not in flat:
                raise self.fail("file", f"no file entry for platform {key}, available: {sorted(flat)}")
            value = flat[key]
            if not isinstance(value, str):
                raise self.fail("file", f"entry for {key} must be a string")
            return value
        raise self.fail("file", "expected a string or a table keyed by platform")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.extend(_flatten(v, key))
        else:
            out.append((key, v))
    return out


# -- the TOML reader -------------------------------------------------------------------------


def toml_reader() -> Any:
    """The TOML reader module: ``tomllib``, or ``tomli`` before Python 3.11.

    Imported on first use: manifests in ``_simpletoml``'s subset and a runtime without a
    configuration file read no TOML.
    """
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover - exercised on 3.10 only

    return tomli  # pragma: no cover


# -- reading the small files of a load (a manifest, an entry file) ----------------------------
# :func:`read_bytes` opens, reads and closes: none of the tty check, ``fstat`` and ``lseek`` of
# ``open(path, "rb").read()``.

_CHUNK = 1 << 16
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_bytes(path: str) -> bytes:
    """The whole content of the file at ``path``.

    :raises OSError: as ``open()`` would (``FileNotFoundError``, ``NotADirectoryError``,
        ``IsADirectoryError`` when ``path`` is a directory, ``PermissionError``...)
    :raises ValueError: ``path`` holds a NUL character
    """
    fd = os.open(path, _FLAGS)
    try:
        first = os.read(fd, _CHUNK)
        chunks = [first]
        # Read to the end (b""): a short read is not proof of it on every file system.
        while first:
            first = os.read(fd, _CHUNK)
            chunks.append(first)
        return chunks[0] if len(chunks) == 2 else b"".join(chunks)
    finally:
        os.close(fd)


# -- where a bundle's Lua source comes from (spec §10) ----------------------------------------


@dataclass(frozen=True)
class PathSource:
    """A bundle directory on disk: the entry file is read from it, and the
    directory goes first on ``package.path``."""

    path: Path
    kind: str = "path"


@dataclass(frozen=True)
class CodeSource:
    """In-memory Lua source text; no directory on ``package.path``, no hot reload."""

    code: str
    kind: str = "code"


@dataclass(frozen=True)
class BytesSource:
    """In-memory bytes that must be UTF-8 Lua source."""

    data: bytes
    kind: str = "bytes"


BundleSource = PathSource | CodeSource | BytesSource


# -- who depends on whom (runtime-semantics "Dependencies") -----------------------------------
# A loaded bundle *D* depends on bundle *B* when D's manifest names B in ``bundle_dependencies``
# or in a ``[[dependency]]`` (``bundle`` / ``bundle_id``), or declares a ``kind = "contract"``
# dependency on a contract B provides.


def declared_contract_ids(m: Manifest) -> frozenset[int]:
    """The guest contract ids ``m`` declares ``[[dependency]]`` tables for."""
    out = set()
    for d in m.dependencies:
        if d.kind != "contract":
            continue
        if d.contract_id is not None:
            out.add(d.contract_id)
        elif d.contract:
            out.add(guest_contract_id(d.contract, d.min_version[0] or 1))
    return frozenset(out)


def depends_on(m: Manifest, name: str, bundle_id: int, provided: Iterable[int]) -> bool:
    """Whether the bundle of manifest ``m`` declared a dependency on bundle ``name``.

    :param provided: contract ids bundle ``name`` provides (that count as a dependency on it)
    """
    if m.name == name:
        return False
    if any(spec.partition("@")[0] == name for spec in m.bundle_dependencies):
        return True
    for d in m.dependencies:
        if d.bundle == name or d.bundle_id == bundle_id:
            return True
    return not declared_contract_ids(m).isdisjoint(provided)


def _targets(m: Manifest) -> set[tuple[str, object]]:
    """Everything ``m`` names as a dependency, as index keys (see :func:`depends_on`)."""
    keys: set[tuple[str, object]] = {("name", spec.partition("@")[0]) for spec in m.bundle_dependencies}
    for d in m.dependencies:
        if d.bundle:
            keys.add(("name", d.bundle))
        if d.bundle_id is not None:
            keys.add(("id", d.bundle_id))
    keys.update(("cid", cid) for cid in declared_contract_ids(m))
    return keys


class DependencyIndex:
    """The loaded bundles by what their manifests name as a dependency.

    Finding who depends on a bundle looks up its name, id and contracts here instead of
    asking every loaded bundle, so unloading or reloading one costs the same at any count.
    Not thread-safe: the runtime changes and reads it under its lock.
    """

    def __init__(self) -> None:
        self._by_target: dict[tuple[str, object], set[str]] = {}

    def add(self, m: Manifest) -> None:
        """Index the loaded bundle of manifest ``m``."""
        for key in _targets(m):
            self._by_target.setdefault(key, set()).add(m.name)

    def remove(self, m: Manifest) -> None:
        """Forget the bundle of manifest ``m`` (the manifest it was added with)."""
        for key in _targets(m):
            names = self._by_target.get(key)
            if names is not None:
                names.discard(m.name)
                if not names:
                    del self._by_target[key]

    def candidates(self, name: str, bundle_id: int, provided: Iterable[int]) -> set[str]:
        """Names of the indexed bundles whose manifests name bundle ``name`` (``bundle_id``) or one
        of the contract ids ``provided``: a superset of those :func:`depends_on` accepts."""
        get = self._by_target.get
        out = set(get(("name", name), ())) | get(("id", bundle_id), set())
        for cid in provided:
            out |= get(("cid", cid), set())
        out.discard(name)
        return out


def unregistered_provides(m: Manifest, registered: Iterable[Registration]) -> list[str]:
    """One message per ``provides`` entry of ``m`` that no registration of its bundle matches."""
    have = {r.contract_id: r.display_name for r in registered}
    out = []
    for p in m.provides:
        if p.contract_id in have:
            continue
        spec = f"{p.name}@{p.major}"
        close = close_matches(spec, list(have.values()))
        hint = f" (did you mean {close[0]}?)" if close else ""
        listed = ", ".join(sorted(have.values())) or "nothing"
        out.append(
            f"bundle {m.name!r}: {m.manifest_path} provides {spec}{hint}, "
            f"but its polyplug_init registered no such contract (it registered: {listed})"
        )
    return out
