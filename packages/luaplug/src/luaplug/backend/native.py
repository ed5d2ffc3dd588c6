"""What every backend's Python engine shares around its native parts.

- :class:`GuardedEngine` and :func:`import_native`: an engine whose native module may be missing
  (the import guard and ``unavailable_reason``);
- :func:`prelude_code`: the host prelude compiled once per process by the engine's own LuaJIT.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, ClassVar

from ..errors import LuaplugError
from .engine import (
    CAP_MEMORY_LIMIT,
    DEFAULT_OPTIONS,
    PRELUDE_PARTS,
    Engine,
    EngineState,
    StateOptions,
    prelude_source,
)

__all__ = ["GuardedEngine", "import_native", "prelude_code"]


def import_native(name: str, hint: str = "") -> tuple[Any, str | None]:
    """``(module, None)`` for the compiled module ``name``, or ``(None, why not)`` when it cannot be
    imported (the reason ends with ``hint``, how to get it, when given)."""
    try:
        return importlib.import_module(name), None
    except ImportError as exc:
        return None, f"the compiled module {name} cannot be loaded ({exc})" + (f"; {hint}" if hint else "")


def prelude_code(dump: Callable[[bytes], bytes | None]) -> Callable[..., bytes]:
    """A function returning a part of the host prelude (``code(part="host")``, see
    :func:`prelude_source`) as ``dump`` compiles it (source bytes in, bytecode out, ``None``
    when it cannot), computed on first use and kept for the process; the source itself when
    ``dump`` gives nothing. Bytecode loads several times faster than source compiles."""

    @functools.lru_cache(maxsize=len(PRELUDE_PARTS))
    def code(part: str = "host") -> bytes:
        src = prelude_source(part).encode("utf-8")
        dumped = dump(src)
        return src if dumped is None else dumped

    return code


class GuardedEngine(Engine):
    """An engine over a native module that may fail to import.

    The subclass sets :attr:`import_error` (at its module's import) to why its native part cannot
    be used, or ``None``; luaplug's probe reports it through :meth:`unavailable_reason`, and
    :meth:`new_state` refuses to run without it. States are made as ``state_class(options)``, never
    with a ``memory_limit`` unless the engine declares ``CAP_MEMORY_LIMIT``.
    """

    #: why this engine cannot run here (``None``: it can)
    import_error: ClassVar[str | None] = None
    #: makes a fresh state (see :meth:`Engine.new_state`) from the load's options
    state_class: ClassVar[Callable[..., EngineState]]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this engine cannot run here, or ``None``."""
        return cls.import_error

    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        if self.import_error is not None:
            raise LuaplugError(self.import_error)
        if options.memory_limit is not None and CAP_MEMORY_LIMIT not in self.capabilities:
            # The core refuses such a load first (CapabilityError); an engine never runs it uncapped.
            raise LuaplugError(f"the {self.name} engine cannot cap a VM's memory ({CAP_MEMORY_LIMIT})")
        return self.state_class(options)
