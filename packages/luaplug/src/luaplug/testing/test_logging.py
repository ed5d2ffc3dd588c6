"""Guest logging through ``HostApi.log`` and the loader's own log lines (spec §6, §9, §11)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import luaplug
from luaplug.abi import ffi

TRACE = 5

EXPECTED = [
    (logging.ERROR, "[iso.logger] an error"),
    (logging.WARNING, "[iso.logger] a warning"),
    (logging.INFO, "[iso.logger] some info"),
    (logging.DEBUG, "[iso.logger] debugging"),
    (TRACE, "[iso.logger] tracing"),
]


def guest_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "luaplug.guest"]


def test_levels_and_scope(runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1)
    runtime.load(bundles / "logger")
    init = guest_records(caplog)
    assert [(r.levelno, r.getMessage(), r.scope) for r in init] == [  # type: ignore[attr-defined]
        (logging.INFO, "[iso.logger.init] init ran", "iso.logger.init")
    ]
    caplog.clear()
    runtime.contract("iso.Logger@1").default.call(0)
    records = guest_records(caplog)
    assert [(r.levelno, r.getMessage()) for r in records] == EXPECTED
    assert {r.scope for r in records} == {"iso.logger"}  # type: ignore[attr-defined]
    assert records[-1].levelname == "TRACE"


def test_logger_level_filters_guest_lines(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.load(bundles / "logger")
    caplog.set_level(logging.WARNING, logger="luaplug.guest")
    runtime.contract("iso.Logger@1").default.call(0)
    assert [r.levelno for r in guest_records(caplog)] == [logging.ERROR, logging.WARNING]


def test_guest_logs_from_another_thread(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.load(bundles / "logger")
    caplog.set_level(1)
    caplog.clear()
    inst = runtime.contract("iso.Logger@1").create_instance()
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(inst.dispatch(0)))
    t.start()
    t.join(60)
    assert results == [0]
    assert [(r.levelno, r.getMessage()) for r in guest_records(caplog)] == EXPECTED


def test_sdk_log_with_a_null_host_is_a_no_op(runtime: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    src = """
    local guest = require("polyplug_guest")
    function polyplug_init()
      return { ["x.NoHost"] = { factory = function() return {} end, functions = { [0] = function()
        guest.log(0, guest.LogLevel.Error, "x", "dropped")
        guest.log(nil, guest.LogLevel.Error, "x", "dropped")
      end } } }, { code = 0 }
    end
    """
    runtime.load_code(src, "nohost")
    caplog.set_level(1)
    runtime.contract("x.NoHost@1").default.call(0)
    assert guest_records(caplog) == []


def test_handler_error_log_line(runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime.load(bundles / "faulty")
    caplog.set_level(logging.ERROR, logger="luaplug.loader")
    assert runtime.contract("iso.Faulty@1").default.dispatch(0) == 1
    (record,) = [r for r in caplog.records if r.name == "luaplug.loader"]
    assert record.levelno == logging.ERROR
    text = record.getMessage()
    assert text.startswith("Lua function call failed: ")
    assert "main.lua" in text and "boom from faulty" in text and "stack traceback" in text


def test_log_callbacks_run_without_runtime_locks(runtime: luaplug.Runtime, bundles: Path) -> None:
    """A handler may wait for another thread that uses the runtime (spec §9: log callbacks never
    run while a loader lock is held)."""
    seen: dict[str, object] = {}
    threads: list[threading.Thread] = []

    class WaitsForAnotherThread(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if seen:
                return
            seen["scope"] = getattr(record, "scope", None)

            def use_runtime() -> None:
                runtime.load(bundles / "counter")
                seen["loaded"] = True

            t = threading.Thread(target=use_runtime, daemon=True)
            threads.append(t)
            t.start()
            t.join(3)  # at once, unless a lock held around this callback blocks the load
            seen["loaded_meanwhile"] = not t.is_alive()

    handler = WaitsForAnotherThread(level=1)
    guest = logging.getLogger("luaplug.guest")
    old_level = guest.level
    guest.addHandler(handler)
    guest.setLevel(1)
    try:
        runtime.load(bundles / "logger")  # its polyplug_init logs
    finally:
        guest.removeHandler(handler)
        guest.setLevel(old_level)
        for t in threads:
            t.join(60)
    assert seen.get("scope") == "iso.logger.init"
    assert seen.get("loaded_meanwhile") is True
    out = ffi.new("int64_t*")
    runtime.contract("iso.Counter@1").default.call(0, 0, out)
    assert out[0] == 1
