"""Smoke executions of the notebooks, run side by side by a small pool of worker processes.

A smoke run spends most of its time in single-threaded work (kernel start, imports, model load,
Python-level loops), so two runs with one thread each finish in about half the wall time of two
runs one after another with two threads each (measured on a 2-core machine: 65 s against 122 s
for four notebooks). The pool is started once per test session; each worker imports the runner
once and keeps it. Every run still gets its own fresh kernel, so runs cannot see each other.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

WORKERS_ENV = "ACTLAB_SMOKE_WORKERS"

Key = tuple[str, str, int]   # (slug, model, repeat)


def default_workers(cores: int | None = None) -> int:
    """Workers for this machine: ``ACTLAB_SMOKE_WORKERS`` when set, else one per core, at most two."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        workers = int(configured)
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV} must be at least 1, not {configured}")
        return workers
    return max(1, min(2, cores or os.cpu_count() or 1))


def _run_in_worker(slug: str, model: str, out_dir: str, cell_timeout_s: float, threads: int) -> dict:
    os.environ["ACTLAB_THREADS"] = str(threads)
    from actlab import runner

    result = runner.run(slug, profile="smoke", model=model, out_dir=out_dir, progress=False,
                        cell_timeout_s=cell_timeout_s)
    payload = None if result.error else json.loads(result.claims_path.read_text())
    return {"error": result.error, "payload": payload, "runtime_s": result.record["runtime_s"],
            "status": result.record["status"], "threads": threads}


class SmokePool:
    """Runs every planned smoke execution once, in submission order, and hands out the outcomes."""

    def __init__(self, out_root: Path, workers: int, cell_timeout_s: float, cores: int) -> None:
        self.out_root = Path(out_root)
        self.workers = workers
        self.threads = max(1, cores // workers)
        self.cell_timeout_s = cell_timeout_s
        # spawn: a forked copy of a process that already runs torch threads can deadlock.
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self._futures: dict[Key, Future] = {}
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def submit(self, keys: list[Key]) -> None:
        for key in keys:
            if key in self._futures:
                continue
            slug, model, repeat = key
            out = self.out_root / f"{slug}-{Path(model).name}-{repeat}"   # a model may be a local directory
            out.mkdir(parents=True, exist_ok=True)
            if self.started_at is None:
                self.started_at = time.perf_counter()
            future = self._executor.submit(_run_in_worker, slug, model, str(out), self.cell_timeout_s, self.threads)
            future.add_done_callback(self._finished)
            self._futures[key] = future

    def _finished(self, _future: Future) -> None:
        with self._lock:
            self.finished_at = time.perf_counter()

    def outcome(self, key: Key) -> dict:
        """The outcome of one run, submitting it first if nobody planned it."""
        if key not in self._futures:
            self.submit([key])
        return self._futures[key].result()

    def phase_wall_s(self) -> float:
        """Wall time from the first submission to the last completion: the smoke phase of the session."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
