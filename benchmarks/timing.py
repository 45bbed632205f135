"""Shared timing and memory helpers of the step benchmarks (`preference_step.py`, `grpo_step.py`).

Import this module only after the script has set `OMP_NUM_THREADS` (it imports torch).

- `StepTimer`: a `TrainerCallback` timing each optimiser step (`on_step_begin` -> `on_step_end` of the normal
  `trainer.train()` loop) and, optionally, the time spent inside chosen methods of the trainer during each step
  (`time_method`, an instance-level wrapper: the class and every other trainer stay untouched).
- Memory: on a GPU, `torch.cuda.max_memory_allocated()` over the measured steps minus the allocation before them. On
  CPU a daemon thread samples, every millisecond and only inside measured steps, the process RSS (`psutil`; absolute,
  it only grows in a long-lived process) and glibc's live heap (`mallinfo2`: bytes in use, including the large
  mmap'd tensor blocks); the growth of the live heap over its level at the first measured step is the per-run figure.
  `resource.getrusage` (lifetime peak) and `tracemalloc` (Python objects, not torch storage) cannot measure this.
- `summarize`, `neighbour_mean`, `spread`: median / min-max of the measured steps, the mean of the reference (TRL)
  runs just before and after a run, and the spread of the reference runs (how much the machine drifted).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psutil
import torch
from transformers import TrainerCallback

CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- memory
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _live_heap_reader():
    """Bytes malloc'd and not freed (small blocks + mmap'd large blocks), or None without glibc's mallinfo2."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2

    def read() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return read


LIVE_HEAP = _live_heap_reader()


class MemorySampler:
    """Peak RSS and peak live heap, sampled every `interval` s by a daemon thread while `active`."""

    def __init__(self, interval: float = 0.001):
        self.process = psutil.Process()
        self.interval = interval
        self.active = False
        self.peak_rss = 0
        self.peak_heap = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.active:
                self.sample()
            time.sleep(self.interval)

    def sample(self):
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
        if LIVE_HEAP is not None:
            self.peak_heap = max(self.peak_heap, LIVE_HEAP())

    def reset(self):
        self.peak_rss = self.process.memory_info().rss
        self.peak_heap = LIVE_HEAP() if LIVE_HEAP is not None else 0

    def close(self):
        self._stop.set()
        self._thread.join()


_SAMPLER: MemorySampler | None = None


def sampler() -> MemorySampler:
    """The process-wide CPU sampler (one thread for all runs of a benchmark), started on first use."""
    global _SAMPLER
    if _SAMPLER is None:
        _SAMPLER = MemorySampler()
    return _SAMPLER


def close_sampler() -> None:
    global _SAMPLER
    if _SAMPLER is not None:
        _SAMPLER.close()
        _SAMPLER = None


def start_memory_window() -> int:
    """Start measuring the peak memory of a whole run (model loading, trainer set-up and training), where `StepTimer`
    measures inside optimiser steps only; returns the baseline to pass to `stop_memory_window`."""
    gc.collect()
    cpu = sampler()
    cpu.reset()
    cpu.active = True  # RSS is sampled on every device
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return cpu.peak_heap


def stop_memory_window(base: int) -> dict:
    """``mem_growth_mib``: peak CUDA allocation (GPU) or peak live heap (CPU) over ``base``; ``peak_rss_mib``."""
    cpu = sampler()
    cpu.sample()
    cpu.active = False
    peak = torch.cuda.max_memory_allocated() if CUDA else cpu.peak_heap
    return {"mem_growth_mib": (peak - base) / 2**20, "peak_rss_mib": cpu.peak_rss / 2**20}


def memory_note() -> str:
    """One line saying what the memory columns mean on this device."""
    if CUDA:
        return "mem +MiB: peak CUDA memory allocated during the measured steps minus that before them."
    return ("mem +MiB: peak growth of glibc live heap (mallinfo2) during the measured steps over the first measured "
            "step's start; peak RSS is absolute (it only grows in one process).")


def fmt_mem(row: dict) -> str:
    if "peak_rss_mib" in row:
        return f"{row['growth_mib']:8.1f} {row['peak_rss_mib']:9.0f}"
    return f"{row['growth_mib']:8.1f} {row['peak_mib']:9.0f}"


# ----------------------------------------------------------------------------- timing
class StepTimer(TrainerCallback):
    """Wall time of each optimiser step (`on_step_begin` -> `on_step_end`), time inside methods registered with
    `time_method` per step, and peak memory after the first `warmup` steps."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.durations: list[float] = []
        self.sections: dict[str, list[float]] = defaultdict(list)  # name -> seconds inside it, one entry per step
        self._current: dict[str, float] = defaultdict(float)
        self.base_mem = 0
        self._t0 = 0.0

    def time_method(self, obj, name: str) -> None:
        """Replace `obj.name` on this instance only by a wrapper adding its wall time to the current step's total,
        so two trainers are measured by the same wrapper around their own (possibly inherited) method."""
        original: Callable = getattr(obj, name)

        def timed(*args, **kwargs):
            if CUDA:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if CUDA:
                    torch.cuda.synchronize()
                self._current[name] += time.perf_counter() - t0

        self._current[name] = 0.0
        setattr(obj, name, timed)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:  # first measured step: memory baseline
            if CUDA:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.base_mem = torch.cuda.memory_allocated()
            else:
                sampler().reset()
                self.base_mem = sampler().peak_heap
        if CUDA:
            torch.cuda.synchronize()
        elif state.global_step >= self.warmup:
            sampler().active = True  # sample only inside measured steps, not while the next batch is fetched
        for name in self._current:
            self._current[name] = 0.0
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if CUDA:
            torch.cuda.synchronize()
        self.durations.append(time.perf_counter() - self._t0)
        for name, seconds in self._current.items():
            self.sections[name].append(seconds)
        if not CUDA and sampler().active:
            sampler().sample()
            sampler().active = False

    def memory(self) -> dict:
        if CUDA:
            peak = torch.cuda.max_memory_allocated()
            return {"peak_mib": peak / 2**20, "growth_mib": (peak - self.base_mem) / 2**20}
        return {"peak_rss_mib": sampler().peak_rss / 2**20,
                "growth_mib": (sampler().peak_heap - self.base_mem) / 2**20}


# ----------------------------------------------------------------------------- statistics
def summarize(measured: list[float]) -> dict:
    return {"median_s": statistics.median(measured), "min_s": min(measured), "max_s": max(measured),
            "steps_s": measured}


def neighbour_mean(runs: list[dict], row: dict, is_reference: Callable[[dict], bool], key: str = "median_s") -> float:
    """Mean of `key` over the reference runs just before and just after `row` (by `order`); one side if the other
    does not exist. Comparing with neighbours, not with all reference runs, cancels slow drift of a shared machine."""
    refs = [r for r in runs if is_reference(r)]
    before = [r for r in refs if r["order"] < row["order"]][-1:]
    after = [r for r in refs if r["order"] > row["order"]][:1]
    sides = before + after
    if not sides:
        raise ValueError("no reference run to compare with")
    return sum(r[key] for r in sides) / len(sides)


def spread(values: list[float]) -> dict:
    """Min, max and (max - min) / median in percent of the reference runs' medians."""
    return {"runs": len(values), "min": min(values), "max": max(values),
            "pct": 100 * (max(values) - min(values)) / statistics.median(values)}
