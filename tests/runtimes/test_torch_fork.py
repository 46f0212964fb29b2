"""The torch backend in a ``fork`` child (issue 17 item 6): torch's OpenMP pool does not survive
a fork, so a child of a process that ran a multi-threaded op used to hang on its first model
call. Real children (``multiprocessing`` 'fork' and ``os.fork``), each with a timeout so a hang
fails the test instead of stalling it."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from portraitseg import Segmenter, load_image

ASSET = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"
HANG_S = 60  # a healthy child answers in ~1 s; a hung one never does


@pytest.fixture
def two_threads_in_parent() -> Iterator[None]:
    """The default on a 2-core machine, whatever the session set: the parent's pool must exist."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def image() -> np.ndarray:
    return load_image(ASSET)


def _mask_in_child(seg: Segmenter, image: np.ndarray, queue: mp.Queue) -> None:
    queue.put((torch.get_num_threads(), seg.mask(image)))


def test_segmenter_made_in_parent_works_in_a_multiprocessing_fork_child(two_threads_in_parent, image) -> None:
    seg = Segmenter(backend="torch")  # default threads: torch's own (2 here)
    expected = seg.mask(image)  # runs the OpenMP pool in the parent
    assert torch.get_num_threads() == 2
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_mask_in_child, args=(seg, image, queue))
    child.start()
    try:  # read before join: the child cannot exit until its ~200 kB result left the pipe
        threads, alpha = queue.get(timeout=HANG_S)
    except queue_module.Empty:
        pytest.fail(f"the fork child hung for {HANG_S} s on its first torch model call")
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    assert threads == 1  # what the child runs on
    np.testing.assert_allclose(alpha, expected, atol=1e-5)
    assert torch.get_num_threads() == 2  # the parent keeps its threads


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None (killed) when it did not end within ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_runtime_made_in_an_os_fork_child_with_two_threads(two_threads_in_parent, image, tmp_path) -> None:
    parent = Segmenter(backend="torch", threads=2)
    expected = parent.mask(image)
    result = tmp_path / "alpha.npy"  # a file, not a pipe: a full pipe would block the child too
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            np.save(result, Segmenter(backend="torch", threads=2).mask(image))  # made in the child
            code = 0
        finally:
            os._exit(code)
    code = _wait(pid, HANG_S)
    assert code is not None, f"the os.fork child hung for {HANG_S} s"
    assert code == 0
    np.testing.assert_allclose(np.load(result), expected, atol=1e-5)
