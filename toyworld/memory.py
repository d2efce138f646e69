"""Peak resident memory of this process and all its descendants (servers, trainers, Ray workers).

A background thread sums the RSS of the whole process tree every `interval` seconds and keeps the maximum,
which is what the demo's <= 6 GiB target is about (one process's max RSS would miss the Ray workers).
"""

from __future__ import annotations

import threading

import psutil


def tree_rss_bytes(root: psutil.Process) -> int:
    """RSS of `root` plus every live descendant (processes that vanish mid-scan are skipped)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakMemory:
    """Context manager sampling the process tree's RSS; `peak_gib` holds the maximum seen."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._root = psutil.Process()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self._root))
            if self._stop.wait(self.interval):
                return

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
