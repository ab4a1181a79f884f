"""Long calls: Ctrl-C within a batch of work, the GIL released, progress reported.

A call reads in batches of at most a few MiB (sized to about 40 ms of work) and checks for
signals between them. These tests count work in bytes reported through ``progress=``, never in
wall-clock time. The progress callback is ``dict.__setitem__``, a builtin that runs no Python
bytecode, so nothing but the native signal check can turn the SIGINT into an exception.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import day_copy

import d2d

COPIES = 4
MAX_BATCH = 2 * 1024 * 1024  # d2d-py/src/stream.rs: MAX_BATCH
ONE_PIECE = 256 * 1024 + 1024  # a batch may end one piece (or one small file) past its budget

CALLS: dict[str, Callable[..., Any]] = {
    "read_events": d2d.read_events,
    "data_check": d2d.data_check,
    "distances": d2d.distances,
}


@pytest.fixture(scope="module")
def big(sample_bytes: bytes) -> list[bytes]:
    """Four copies of the sample day, 31 MB: seconds of work in a debug build."""
    return [day_copy(sample_bytes, k) for k in range(COPIES)]


@pytest.fixture
def armed_sigint() -> Iterator[dict[str, bool]]:
    """SIGINT raises KeyboardInterrupt only while armed, so a late signal cannot hit pytest."""
    state = {"armed": True}

    def handler(signum: int, frame: object) -> None:
        if state["armed"]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        state["armed"] = False
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("name", list(CALLS))
def test_ctrl_c_raises_keyboard_interrupt_within_a_batch(
    name: str, big: list[bytes], armed_sigint: dict[str, bool]
):
    reported: dict[int, int | None] = {}
    at_signal: list[int] = []

    def interrupt() -> None:
        while not reported:
            time.sleep(0.001)
        at_signal.append(len(reported))
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        CALLS[name](big, progress=reported.__setitem__)
    sender.join()
    total = sum(map(len, big))
    done = max(reported)
    # Stopped early, counted in work: a batch or two after the signal, far from the end.
    assert len(reported) - at_signal[0] <= 2, (len(reported), at_signal)
    assert done <= at_signal[0] * MAX_BATCH + 2 * (MAX_BATCH + ONE_PIECE)
    assert done < total / 2, (done, total)


def test_batches_are_bounded_so_signals_are_checked_often(big: list[bytes]):
    reported: dict[int, int | None] = {}
    d2d.data_check(big, progress=reported.__setitem__)
    done = sorted(reported)
    total = sum(map(len, big))
    assert done[-1] == total
    assert set(reported.values()) == {total}
    steps = [b - a for a, b in zip([0, *done], done)]
    assert max(steps) <= MAX_BATCH + ONE_PIECE, max(steps)
    assert len(done) >= total // (MAX_BATCH + ONE_PIECE)


def test_other_threads_run_while_a_call_works(big: list[bytes]):
    ticks = 0
    stop = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.0005)

    ticker = threading.Thread(target=tick)
    reported: dict[int, int | None] = {}
    ticker.start()
    try:
        d2d.distances(big, progress=reported.__setitem__)
    finally:
        stop.set()
        ticker.join()
    # The ticker got the GIL between (and during) the batches, not only after the call.
    assert ticks > len(reported), (ticks, len(reported))


def test_progress_true_draws_a_tqdm_bar(landing: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("tqdm", reason="progress=True draws with tqdm, which is not installed")
    d2d.data_check(landing, progress=True)
    err = capsys.readouterr().err
    assert "data_check" in err and "100%" in err, err[-500:]


def test_progress_callable_sees_the_total_of_a_folder(landing: Path, landing_files: list[Path]):
    reported: dict[int, int | None] = {}
    d2d.read_events(landing, progress=reported.__setitem__)
    total = sum(p.stat().st_size for p in landing_files)
    assert max(reported) == total and reported[total] == total


def test_progress_of_a_generator_has_no_total(landing_files: list[Path]):
    reported: dict[int, int | None] = {}
    d2d.distances((p for p in landing_files[:20]), progress=reported.__setitem__)
    assert reported and set(reported.values()) == {None}


def test_progress_rejects_other_values():
    with pytest.raises(TypeError, match="progress"):
        d2d.read_events(b"", progress="yes")  # type: ignore[arg-type]
