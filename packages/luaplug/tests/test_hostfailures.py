"""Host function exceptions kept per thread for the DispatchError that carries their text."""

from __future__ import annotations

import threading

from luaplug import AbiErrorCode, DispatchError, _hostfailures
from luaplug.errors import dispatch_error


def test_a_dispatch_error_carrying_the_text_chains_the_exception() -> None:
    exc = KeyError("k")
    _hostfailures.record("host.S@1.get: KeyError: 'k'", exc)
    err = dispatch_error(1, "a.B@1", 0, "main.lua:3: host.S@1.get: KeyError: 'k' (HostContractCallFailed)")
    assert isinstance(err, DispatchError) and err.__cause__ is exc and err.__suppress_context__
    # taken once: the next error with the same text has no cause
    assert dispatch_error(1, "a.B@1", 0, "host.S@1.get: KeyError: 'k'").__cause__ is None


def test_other_texts_and_other_threads_are_not_chained() -> None:
    exc = ValueError("v")
    _hostfailures.record("host.S@1.put: ValueError: v", exc)
    assert dispatch_error(1, "a.B@1", 0, "an unrelated error").__cause__ is None
    assert dispatch_error(int(AbiErrorCode.StaleHandle), "a.B@1", 0, None).__cause__ is None
    seen: list[BaseException | None] = []
    t = threading.Thread(target=lambda: seen.append(_hostfailures.take("host.S@1.put: ValueError: v")))
    t.start()
    t.join()
    assert seen == [None]
    assert _hostfailures.take("x host.S@1.put: ValueError: v") is exc


def test_the_newest_match_wins_and_only_a_few_are_kept() -> None:
    old, new = RuntimeError("1"), RuntimeError("2")
    _hostfailures.record("same text", old)
    _hostfailures.record("same text", new)
    assert _hostfailures.take("same text") is new
    assert _hostfailures.take("same text") is old
    for i in range(20):
        _hostfailures.record(f"text {i:02}", RuntimeError(str(i)))
    assert _hostfailures.take("text 00") is None
    assert str(_hostfailures.take("text 19")) == "19"
