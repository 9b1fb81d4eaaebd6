"""Shared by the tests that run writers in other processes and collect their results
through a ``multiprocessing`` queue."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any


def stop_workers(processes: Sequence[BaseProcess], results: multiprocessing.Queue[Any]) -> None:
    """Kill what still runs, reap every process and close the queue, so that a failed test
    leaves no process or feeder thread behind."""
    for process in processes:
        if process.is_alive():
            process.kill()
        if process.pid is not None:
            process.join()
    results.close()
    results.join_thread()
