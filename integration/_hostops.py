"""Copies of the ``hostops`` bundle under other names, and its replies (``bundles/hostops/main.lua``).

The bundle runs HostApi bundle operations from Lua; its one function takes a command string
and answers ``"<code>|<text>"``. Copies named ``hostops_peer`` / ``hostops_more`` serve
``ops.Peer@1`` / ``ops.More@1`` with the same code.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from luaplug.ids import bundle_id
from luaplug.testing import BUNDLES_DIR

BUNDLES = BUNDLES_DIR

#: bundle name -> the contract its copy serves (main.lua picks it by bundle id)
CONTRACTS = {"hostops": "ops.HostOps", "hostops_peer": "ops.Peer", "hostops_more": "ops.More"}


def ops_bundle(root: Path, name: str = "hostops", extra: str = "", init_command: str | None = None) -> Path:
    """A copy of ``bundles/hostops`` named ``name`` in ``root/name``.

    :param extra: manifest lines added before ``[function_count]`` (``[[dependency]]`` tables...)
    :param init_command: a command its ``polyplug_init`` runs (reply: the ``init_result`` command)
    """
    d = Path(root) / name
    d.mkdir(parents=True)
    shutil.copyfile(BUNDLES / "hostops" / "main.lua", d / "main.lua")
    contract = CONTRACTS[name]
    lines = [
        f'name = "{name}"',
        f"id = {bundle_id(name)}",
        'loader = "lua"',
        'file = "main.lua"',
        'version = "1.0.0"',
        f'provides = ["{contract}@1"]',
        extra,
        "[function_count]",
        f'"{contract}@1" = 1',
    ]
    (d / "manifest.toml").write_text("\n".join(lines) + "\n", "utf-8")
    if init_command is not None:
        (d / "init_command.txt").write_text(init_command, "utf-8")
    return d


@dataclass(frozen=True)
class Reply:
    """A parsed reply: ``code`` and the fields after it."""

    code: int
    fields: tuple[str, ...]

    @property
    def text(self) -> str:
        """The error text (``get_last_error``) of a failed operation."""
        return "|".join(self.fields)

    @property
    def length(self) -> int:
        """``Array.len`` of an array reply."""
        return int(self.fields[0])

    @property
    def align(self) -> int:
        """``Array.align`` of an array reply."""
        return int(self.fields[1])

    @property
    def items(self) -> list[tuple[int, ...]]:
        """The elements of an array reply, each as a tuple of ints."""
        raw = self.fields[2]
        return [tuple(int(v) for v in item.split(":")) for item in raw.split(",")] if raw else []


def parse(text: str) -> Reply:
    code, _, rest = text.partition("|")
    return Reply(int(code), tuple(rest.split("|")) if rest else ())
