"""luaplug.manifest.read_bytes: what open().read() gives, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest

from luaplug.manifest import read_bytes


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 7])
def test_reads_the_whole_file(tmp_path: Path, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert read_bytes(str(f)) == data


def test_errors_are_those_of_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        read_bytes(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        read_bytes(str(tmp_path / "file" / "below"))
    with pytest.raises(ValueError):
        read_bytes(str(tmp_path / "nul\x00name"))
