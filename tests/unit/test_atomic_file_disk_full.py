"""A council file that cannot be finished because the export directory's disk
is full gives its `.part` up (hub/exports.py `AtomicFile`): the half-written
part is removed, not left to keep the disk full until a rebuild after the
build lease, and no directory descriptor is left open. Found by the
failure-injection review (an export to a full tmpfs left `.part` behind:
closing the file flushed its buffer, raised ENOSPC, and the unlink after it
never ran).

A full disk is a file object whose flush and close raise ENOSPC (a real
BufferedWriter closes its descriptor even when the flush inside close fails,
as this one does)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hub.exports import AtomicFile, outbound_dir

ORG = "E06000060"


class _DiskFull:
    """The writer's file, on a disk with no space left: buffered bytes cannot be written."""

    def __init__(self, f) -> None:  # noqa: ANN001
        self._f = f

    @property
    def closed(self) -> bool:
        return self._f.closed

    def fileno(self) -> int:
        return self._f.fileno()

    def write(self, data: bytes) -> int:
        return len(data)  # taken into the buffer

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            raise OSError(errno.ENOSPC, "No space left on device")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _writer(tmp_path: Path) -> tuple[AtomicFile, Path]:
    directory = outbound_dir(tmp_path / "exports", ORG)
    out = AtomicFile(directory, "S117_E06000060_20261204.csv")
    out.write(b"HEADER\n")
    out._f = _DiskFull(out._f)  # type: ignore[assignment]
    return out, directory


def test_a_file_given_up_on_a_full_disk_leaves_no_part_behind(tmp_path: Path) -> None:
    before = _open_fds()
    out, directory = _writer(tmp_path)
    assert (directory / out.part).exists()
    out.abort()  # the builder gives the file up (its claim lapsed, or its rows failed)
    assert sorted(p.name for p in directory.iterdir()) == []
    assert _open_fds() == before
    out.abort()  # and again (the builder's own `except` after a failed commit): nothing more to do


def test_a_file_that_cannot_be_finished_on_a_full_disk_is_not_published_and_leaves_no_part(tmp_path: Path) -> None:
    before = _open_fds()
    out, directory = _writer(tmp_path)
    with pytest.raises(OSError) as raised:
        out.commit()
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in directory.iterdir()) == []  # neither the part nor the name
    assert _open_fds() == before


def test_a_file_finished_is_published_and_its_directory_closed(tmp_path: Path) -> None:
    before = _open_fds()
    directory = outbound_dir(tmp_path / "exports", ORG)
    out = AtomicFile(directory, "S117_E06000060_20261204.csv")
    out.write(b"HEADER\n")
    out.commit()
    assert (directory / "S117_E06000060_20261204.csv").read_bytes() == b"HEADER\n"
    assert [p.name for p in directory.iterdir()] == ["S117_E06000060_20261204.csv"]
    assert _open_fds() == before
    out.abort()  # after a commit: nothing to give up
    assert (directory / "S117_E06000060_20261204.csv").exists()
