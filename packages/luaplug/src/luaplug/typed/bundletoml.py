"""Reading an authoring ``bundle.toml`` (what ``polyplugc generate --bundle`` reads).

::

    [bundle]
    name = "text_tools"          # the bundle's name (its id is fnv1a64(name))
    version = "1.0.0"
    api = "api.toml"             # relative to this file
    loader = "lua"               # older files: runtime = "lua"
    file = "main.lua"            # the entry file, relative to the bundle directory
    needs_reinit_on_dep_reload = false

    [[plugin]]
    name = "scanner"             # names set_<plugin>_factory in the generated contracts.lua
    implements = ["shapes.Scanner@1.2"]

    [[dependency]]               # a contract of another bundle this one calls (peer_callers.lua)
    kind = "contract"
    contract = "shapes.Counter"
    min_version = "1.0"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import ApiSpecError
from ..manifest import toml_reader
from .apitoml import load_api
from .spec import ApiSpec, ContractSpec

__all__ = ["BundleSpec", "Dependency", "PluginSpec", "load_bundle_toml", "parse_bundle_toml"]

_VERSION: Final = re.compile(r"^\d+(\.\d+){0,2}$")


@dataclass(frozen=True)
class PluginSpec:
    """One ``[[plugin]]``: a name and the guest contracts it implements."""

    name: str
    implements: tuple[ContractSpec, ...]


@dataclass(frozen=True)
class Dependency:
    """One ``[[dependency]]``: a guest contract (of another bundle) this bundle calls.

    :ivar major: the major of ``min_version`` (what ``find_guest_contract`` is asked for)
    """

    kind: str
    contract: str
    min_version: str
    bundle: str | None = None

    @property
    def major(self) -> int:
        return int(self.min_version.split(".")[0])


@dataclass(frozen=True)
class BundleSpec:
    """An authoring ``bundle.toml`` with the ``api.toml`` it names.

    :ivar file: the entry file, or a ``{"os.arch": path}`` table
    """

    name: str
    version: str
    loader: str
    file: str | Mapping[str, str]
    api: ApiSpec
    plugins: tuple[PluginSpec, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    needs_reinit_on_dep_reload: bool = False
    path: str | None = None

    @property
    def provides(self) -> list[ContractSpec]:
        """The guest contracts the plugins implement, each once, sorted by ``name@major``."""
        seen: dict[str, ContractSpec] = {}
        for p in self.plugins:
            for c in p.implements:
                seen.setdefault(c.key, c)
        return [seen[k] for k in sorted(seen)]

    def peer_contracts(self) -> list[tuple[ContractSpec, Dependency]]:
        """The declared guest contracts a ``[[dependency]]`` names, with that dependency."""
        out = []
        for c in self.api.guest_contracts:
            for d in self.dependencies:
                if d.contract == c.name and d.major == c.major:
                    out.append((c, d))
                    break
        return out


def load_bundle_toml(path: str | os.PathLike[str]) -> BundleSpec:
    """Parse the ``bundle.toml`` at ``path`` and the ``api.toml`` it names.

    :raises ApiSpecError: unreadable, not TOML, or invalid (naming the file and the key)
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiSpecError(f"cannot read: {exc}", path=str(p)) from None
    return parse_bundle_toml(text, path=str(p))


def _implements(api: ApiSpec, ref: object, key: str, path: str | None) -> ContractSpec:
    """The contract ``"name@M"``, ``"name@M.m"`` or ``"name@M.m.p"`` names (the declared version
    must have that major and be at least that version)."""
    if not isinstance(ref, str) or "@" not in ref:
        raise ApiSpecError(f"must be 'name@major[.minor]', not {ref!r}", path=path, key=key)
    name, _, ver = ref.partition("@")
    if not _VERSION.match(ver):
        raise ApiSpecError(f"bad version in {ref!r}", path=path, key=key)
    want = [int(x) for x in ver.split(".")]
    for c in api.guest_contracts:
        have = [int(x) for x in c.version.split(".")] + [0, 0]
        if c.name == name and have[0] == want[0] and have[: len(want)] >= want:
            return c
    declared = ", ".join(f"{c.name}@{c.version}" for c in api.guest_contracts) or "none"
    raise ApiSpecError(f"{ref} is not declared in {api.path or 'the api'} (declared: {declared})", path=path, key=key)


def parse_bundle_toml(source: str | Mapping[str, Any], *, path: str | None = None) -> BundleSpec:
    """Parse ``bundle.toml`` text (or its parsed table); ``[bundle].api`` is read relative to ``path``.

    :raises ApiSpecError: the first problem found
    """
    if isinstance(source, str):
        toml = toml_reader()
        try:
            data: Mapping[str, Any] = toml.loads(source)
        except toml.TOMLDecodeError as exc:
            raise ApiSpecError(f"not valid TOML: {exc}", path=path) from None
    else:
        data = source

    def fail(message: str, key: str) -> ApiSpecError:
        return ApiSpecError(message, path=path, key=key)

    def text(table: Mapping[str, Any], field: str, key: str, default: str | None = None) -> str:
        value = table.get(field, default)
        if not isinstance(value, str) or not value:
            raise fail(
                "is missing" if value is None else f"must be a non-empty string, not {value!r}", f"{key}.{field}"
            )
        return value

    meta = data.get("bundle")
    if not isinstance(meta, dict):
        raise fail("is missing (a [bundle] table with name, version, api, loader, file)", "bundle")
    name = text(meta, "name", "bundle")
    version = text(meta, "version", "bundle")
    if not _VERSION.match(version):
        raise fail(f"{version!r} is not 'x.y.z'", "bundle.version")
    loader = meta.get("loader", meta.get("runtime", "lua"))
    if not isinstance(loader, str) or not loader:
        raise fail(f"must be a non-empty string, not {loader!r}", "bundle.loader")
    file = meta.get("file")
    if isinstance(file, dict):
        flat: dict[str, str] = {}
        for os_name, arches in file.items():
            if not isinstance(arches, dict) or not all(isinstance(v, str) for v in arches.values()):
                raise fail("must map os.arch to a path", f"bundle.file.{os_name}")
            for arch, target in arches.items():
                flat[f"{os_name}.{arch}"] = target
        entry: str | dict[str, str] = flat
    elif isinstance(file, str) and file:
        entry = file
    else:
        raise fail("is missing (the entry file)" if file is None else f"must be a path, not {file!r}", "bundle.file")
    reinit = meta.get("needs_reinit_on_dep_reload", False)
    if not isinstance(reinit, bool):
        raise fail(f"must be true or false, not {reinit!r}", "bundle.needs_reinit_on_dep_reload")
    api_ref = text(meta, "api", "bundle")
    base = Path(path).parent if path else Path.cwd()
    api = load_api(base / api_ref)
    if any(c.name == name for c in api.guest_contracts):
        raise fail(f"the bundle name {name!r} is also a contract name", "bundle.name")

    raw_plugins = data.get("plugin", [])
    if not isinstance(raw_plugins, list) or not all(isinstance(p, dict) for p in raw_plugins):
        raise fail("must be an array of tables", "plugin")
    plugins: list[PluginSpec] = []
    for i, p in enumerate(raw_plugins):
        key = f"plugin[{i}]"
        pname = text(p, "name", key)
        refs = p.get("implements", [])
        if not isinstance(refs, list):
            raise fail("must be an array of 'name@version' strings", f"{key}.implements")
        impl = tuple(_implements(api, r, f"{key}.implements[{j}]", path) for j, r in enumerate(refs))
        plugins.append(PluginSpec(pname, impl))
    served: dict[str, str] = {}
    for i, plugin in enumerate(plugins):
        for c in plugin.implements:
            if c.name in served and served[c.name] != plugin.name:
                raise fail(f"{c.name} is implemented by plugins {served[c.name]} and {plugin.name}", f"plugin[{i}]")
            served[c.name] = plugin.name

    raw_deps = data.get("dependency", [])
    if not isinstance(raw_deps, list) or not all(isinstance(d, dict) for d in raw_deps):
        raise fail("must be an array of tables", "dependency")
    deps: list[Dependency] = []
    for i, d in enumerate(raw_deps):
        key = f"dependency[{i}]"
        kind = text(d, "kind", key, "contract")
        if kind not in ("contract", "bundle"):
            raise fail(f"must be 'contract' or 'bundle', not {kind!r}", f"{key}.kind")
        contract = text(d, "contract", key)
        min_version = text(d, "min_version", key)
        if not _VERSION.match(min_version):
            raise fail(f"{min_version!r} is not 'x.y[.z]'", f"{key}.min_version")
        dep_bundle = text(d, "bundle", key) if kind == "bundle" else None
        deps.append(Dependency(kind, contract, min_version, dep_bundle))
    return BundleSpec(name, version, loader, entry, api, tuple(plugins), tuple(deps), reinit, path)
