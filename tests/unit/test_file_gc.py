"""The cyclic collector's thresholds while council files are processed (hub/file_jobs.py)."""

from __future__ import annotations

import gc

import pytest

from hub.file_jobs import FILE_GC_THRESHOLD, fewer_collections


@pytest.fixture
def thresholds():  # noqa: ANN201
    saved = gc.get_threshold()
    gc.set_threshold(20_000, 20, 20)
    yield
    gc.set_threshold(*saved)


def test_raised_while_held_and_put_back_by_the_last_holder(thresholds: None) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (FILE_GC_THRESHOLD, 20, 20)
        with fewer_collections():  # a second file at once
            assert gc.get_threshold() == (FILE_GC_THRESHOLD, 20, 20)
        assert gc.get_threshold() == (FILE_GC_THRESHOLD, 20, 20)  # the first is still processed
    assert gc.get_threshold() == (20_000, 20, 20)


def test_put_back_when_processing_fails(thresholds: None) -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("chunk failed")
    assert gc.get_threshold() == (20_000, 20, 20)


def test_thresholds_set_by_someone_else_meanwhile_are_kept(thresholds: None) -> None:
    with fewer_collections():
        gc.set_threshold(5_000, 10, 10)
    assert gc.get_threshold() == (5_000, 10, 10)


def test_collector_off_or_higher_left_alone(thresholds: None) -> None:
    gc.set_threshold(0, 20, 20)
    with fewer_collections():
        assert gc.get_threshold() == (0, 20, 20)
    assert gc.get_threshold() == (0, 20, 20)
    gc.set_threshold(FILE_GC_THRESHOLD * 2, 20, 20)
    with fewer_collections():
        assert gc.get_threshold() == (FILE_GC_THRESHOLD * 2, 20, 20)
    assert gc.get_threshold() == (FILE_GC_THRESHOLD * 2, 20, 20)
