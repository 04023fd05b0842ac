"""Time sampling runs of "method vs baseline" in one process.

A :class:`Variant` is a name and a callable that runs one complete sampling (for example
``nodes.common_ksampler`` on a ModelPatcher with a method's patches attached). :func:`compare`
runs every variant ``warmup`` times, then ``repeats`` timed rounds in which each variant runs once,
in the same order every round (A B A B ...: slow drift of the machine, such as thermal state or a
neighbour's load, then hits every variant alike), and returns a :class:`Report` with per-variant
medians, ratios to the baseline and peak memory.

Peak memory is the peak above the level just before the run:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before the run (tensors the run allocates through PyTorch's allocator).
* CPU on Linux: the kernel's resident-set high-water mark. Writing ``5`` to
  ``/proc/self/clear_refs`` resets ``VmHWM`` in ``/proc/self/status`` to the current RSS; the peak is
  ``VmHWM`` after the run minus ``VmRSS`` before it. The kernel updates the mark on every page
  fault, so it sees peaks that a sampling thread would miss, and it costs nothing during the run.
  Before each run glibc's ``malloc_trim(0)`` hands freed heap pages back to the OS; otherwise the
  run would reuse pages the previous run left resident and its peak would read as ~0.
* Elsewhere on CPU: a background thread samples RSS with psutil every 2 ms (can miss short peaks).

Wall time on a shared CPU machine includes waiting for cores other processes hold, so each run
also records this process's CPU time and how many cores other processes kept busy meanwhile
(:class:`ContentionMeter`), and ``quiet_wait_s`` can hold each run until the machine is idle.

This module does not import ComfyUI; it needs torch, and psutil only for the sampling fallback.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

MiB = 1024 * 1024


@dataclass
class Variant:
    """One thing to time. ``fn()`` runs one complete sampling; what it returns (a tensor, or a
    LATENT dict with "samples") is compared with the baseline's output of the same run index."""

    name: str
    fn: Callable[[], Any]
    note: str = ""


# ----------------------------------------------------------------------------- memory probes


class MemoryProbe:
    method = "none"

    def start(self) -> None:  # just before the timed call
        pass

    def stop(self) -> int | None:  # just after it (after synchronisation): peak bytes above start
        return None


class CudaPeakProbe(MemoryProbe):
    method = "torch.cuda.max_memory_allocated - memory_allocated before the run"

    def __init__(self, device):
        self.device = torch.device(device)
        self._before = 0

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._before = torch.cuda.memory_allocated(self.device)

    def stop(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self._before


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field_name} in {_STATUS}")
    return int(match.group(1))


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so that RSS before a run is the memory in use
    rather than what the allocator kept from the previous run (which the next run would reuse
    without raising RSS, hiding its peak). No-op where glibc is absent."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class RssHighWaterProbe(MemoryProbe):
    method = ("Linux VmHWM (reset through /proc/self/clear_refs) - VmRSS before the run, "
              "after glibc malloc_trim(0)")

    def __init__(self):
        self._before = 0

    @staticmethod
    def available() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
            _status_kib("VmHWM")
            return True
        except OSError:
            return False

    def start(self) -> None:
        _malloc_trim()
        _CLEAR_REFS.write_text("5")  # VmHWM := current RSS
        self._before = _status_kib("VmRSS")

    def stop(self) -> int:
        return max(0, _status_kib("VmHWM") - self._before) * 1024


class RssSamplerProbe(MemoryProbe):
    method = "psutil RSS sampled every 2 ms by a thread - RSS before the run (after malloc_trim)"

    def __init__(self, interval_s: float = 0.002):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._before = 0
        self._peak = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def start(self) -> None:
        _malloc_trim()
        self._before = self._peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        return max(0, self._peak - self._before)


def pick_probe(device: str | torch.device) -> MemoryProbe:
    device = torch.device(device)
    if device.type == "cuda":
        return CudaPeakProbe(device)
    if RssHighWaterProbe.available():
        return RssHighWaterProbe()
    try:
        return RssSamplerProbe()
    except ImportError:
        return MemoryProbe()


# ----------------------------------------------------------------------------- contention


class ContentionMeter:
    """How many CPU cores *other* processes used over an interval (Linux: busy jiffies of the whole
    machine from /proc/stat minus this process's from /proc/self/stat). A benchmark on a shared
    machine should know when it competed for cores; ``wait_quiet`` can also hold off a run until
    the others are idle. ``available`` is False elsewhere and every reading is None."""

    def __init__(self):
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            self._snapshot()
            self.available = True
        except (OSError, ValueError, IndexError):
            self.available = False
        self._start: tuple[int, int, float] | None = None

    @staticmethod
    def _snapshot() -> tuple[int, int, float]:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # minus idle, iowait
        stat = Path("/proc/self/stat").read_text()
        own = stat[stat.rindex(")") + 2:].split()
        mine = int(own[11]) + int(own[12])  # utime + stime (fields 14, 15)
        return busy, mine, time.monotonic()

    def start(self) -> None:
        self._start = self._snapshot() if self.available else None

    def stop(self) -> float | None:
        """Mean number of cores other processes kept busy since start()."""
        if self._start is None:
            return None
        busy0, mine0, t0 = self._start
        busy1, mine1, t1 = self._snapshot()
        if t1 - t0 <= 0:
            return None
        return max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / self._hz / (t1 - t0))

    def wait_quiet(self, max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 1.0) -> float:
        """Sleep in ``window_s`` windows until other processes use less than ``threshold_cores``
        over one window, for at most ``max_wait_s``. Returns the seconds waited."""
        if not self.available or max_wait_s <= 0:
            return 0.0
        t0 = time.monotonic()
        while True:
            self.start()
            time.sleep(window_s)
            others = self.stop()
            waited = time.monotonic() - t0
            if others is None or others < threshold_cores or waited >= max_wait_s:
                return waited


# ----------------------------------------------------------------------------- report


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class VariantStats:
    """The timed runs of one variant (index r = round r), and what Report derives from them."""

    name: str
    note: str
    times_s: list[float]  # wall clock (after device synchronisation)
    cpu_s: list[float]  # this process's CPU time (all threads), user + system
    peaks_bytes: list[int | None]  # peak memory above the level before the run
    loads: list[float]  # 1-minute load average just before the run
    contention: list[float]  # cores other processes kept busy during the run (CPU machines)
    max_abs_diff: float | None = None  # output vs the baseline's output (first run of each)
    # filled in by Report
    ratio: float = 1.0  # median / baseline median
    ratio_of_mins: float = 1.0  # min / baseline min
    cpu_ratio: float = 1.0  # median CPU time / baseline median CPU time
    paired_ratios: list[float] = field(default_factory=list)  # run r / baseline run r

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def cpu_median_s(self) -> float:
        return statistics.median(self.cpu_s) if self.cpu_s else math.nan

    @property
    def spread(self) -> float:
        """(max - min) / median of this variant's timed runs: the run-to-run noise."""
        return (max(self.times_s) - self.min_s) / self.median_s if self.median_s else math.nan

    @property
    def peak_median(self) -> float | None:
        return _median([p for p in self.peaks_bytes if p is not None])


@dataclass
class Report:
    baseline: str
    variants: list[VariantStats]  # the baseline first
    repeats: int
    warmup: int
    steps: int | None
    device: str
    memory_method: str
    wall_s: float
    started_at: str
    meta: dict[str, Any] = field(default_factory=dict)  # printed above the table
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed under the table
    extra: dict[str, Any] = field(default_factory=dict)  # anything a caller derives (JSON only)

    def __post_init__(self) -> None:
        base = self.variants[0]
        for v in self.variants:
            v.ratio = v.median_s / base.median_s
            v.ratio_of_mins = v.min_s / base.min_s
            v.cpu_ratio = v.cpu_median_s / base.cpu_median_s if base.cpu_median_s else math.nan
            v.paired_ratios = [t / b for t, b in zip(v.times_s, base.times_s)]

    def per_step(self, seconds: float) -> float | None:
        return seconds / self.steps if self.steps else None

    @property
    def mean_load(self) -> float | None:
        loads = [x for v in self.variants for x in v.loads]
        return sum(loads) / len(loads) if loads else None

    @property
    def mean_contention(self) -> float | None:
        xs = [x for v in self.variants for x in v.contention]
        return sum(xs) / len(xs) if xs else None

    # -- output

    def as_dict(self) -> dict[str, Any]:
        base = self.variants[0]
        rows = []
        for v in self.variants:
            rows.append(
                {
                    "name": v.name,
                    "note": v.note,
                    "times_s": v.times_s,
                    "cpu_s": v.cpu_s,
                    "loadavg_before_run": v.loads,
                    "other_processes_cores": v.contention,
                    "median_s": v.median_s,
                    "min_s": v.min_s,
                    "max_s": max(v.times_s),
                    "per_step_s": self.per_step(v.median_s),
                    "spread": v.spread,
                    "ratio": v.ratio,
                    "ratio_of_mins": v.ratio_of_mins,
                    "cpu_median_s": v.cpu_median_s,
                    "cpu_ratio": v.cpu_ratio,
                    "cpu_spread": (max(v.cpu_s) - min(v.cpu_s)) / v.cpu_median_s if v.cpu_median_s else None,
                    "paired_ratios": v.paired_ratios,
                    "paired_ratio_median": statistics.median(v.paired_ratios),
                    "delta_per_step_s": self.per_step(v.median_s - base.median_s),
                    "peaks_bytes": v.peaks_bytes,
                    "peak_median_bytes": v.peak_median,
                    "max_abs_diff_vs_baseline": v.max_abs_diff,
                }
            )
        return {
            "baseline": self.baseline,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "steps": self.steps,
            "device": self.device,
            "memory_method": self.memory_method,
            "wall_s": self.wall_s,
            "started_at": self.started_at,
            "mean_loadavg": self.mean_load,
            "mean_other_processes_cores": self.mean_contention,
            "meta": self.meta,
            "environment": self.environment,
            "variants": rows,
            "notes": self.notes,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        """The inverse of as_dict (to re-print saved reports)."""
        stats = [
            VariantStats(
                row["name"], row.get("note", ""), row["times_s"], row.get("cpu_s", []),
                row.get("peaks_bytes", []), row.get("loadavg_before_run", []),
                row.get("other_processes_cores", []), row.get("max_abs_diff_vs_baseline"),
            )
            for row in d["variants"]
        ]
        return cls(
            baseline=d["baseline"], variants=stats, repeats=d["repeats"], warmup=d["warmup"],
            steps=d.get("steps"), device=d["device"], memory_method=d["memory_method"],
            wall_s=d["wall_s"], started_at=d["started_at"], meta=d.get("meta", {}),
            environment=d.get("environment", {}), notes=d.get("notes", []), extra=d.get("extra", {}),
        )

    def save_json(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")

    def markdown(self) -> str:
        base = self.variants[0]
        lines = []
        title = self.meta.get("title")
        if title:
            lines.append(f"### {title}")
            lines.append("")
        facts = [f"{k}={v}" for k, v in self.meta.items() if k != "title"]
        if facts:
            lines.append("- " + ", ".join(facts))
        load, others = self.mean_load, self.mean_contention
        load_text = "" if load is None else (
            f"; mean 1-min load average {load:.1f} on {self.environment.get('cpu_count')} CPUs"
        )
        if others is not None:
            load_text += f"; other processes used {others:.2f} cores on average during the runs"
        lines.append(
            f"- device {self.device}; {self.repeats} timed rounds after {self.warmup} warm-up "
            f"round(s), order {' '.join(v.name for v in self.variants)} each round; "
            f"wall {self.wall_s:.1f} s{load_text}"
        )
        lines.append(f"- peak memory: {self.memory_method}")
        lines.append("")
        lines.append(
            "| variant | median s | per step s | ratio | paired ratio med [min, max] | ratio of mins "
            "| CPU s | CPU-time ratio | spread | peak MiB | Δpeak MiB | max abs Δout |"
        )
        lines.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for v in self.variants:
            per_step = self.per_step(v.median_s)
            pr = v.paired_ratios
            peak = v.peak_median
            dpeak = None if peak is None or base.peak_median is None else peak - base.peak_median
            lines.append(
                "| {name}{mark} | {med:.3f} | {ps} | {ratio:.3f} | {prm:.3f} [{prmin:.3f}, {prmax:.3f}] "
                "| {rmin:.3f} | {cpu:.2f} | {rcpu:.3f} | {spread:.1%} | {peak} | {dpeak} | {diff} |".format(
                    name=v.name,
                    mark=" (baseline)" if v is base else "",
                    med=v.median_s,
                    ps="-" if per_step is None else f"{per_step:.3f}",
                    ratio=v.ratio,
                    prm=statistics.median(pr),
                    prmin=min(pr),
                    prmax=max(pr),
                    rmin=v.ratio_of_mins,
                    cpu=v.cpu_median_s,
                    rcpu=v.cpu_ratio,
                    spread=v.spread,
                    peak="-" if peak is None else f"{peak / MiB:.0f}",
                    dpeak="-" if v is base or dpeak is None else f"{dpeak / MiB:+.0f}",
                    diff="-" if v is base or v.max_abs_diff is None else f"{v.max_abs_diff:.3g}",
                )
            )
        described = [f"- {v.name}: {v.note}" for v in self.variants if v.note]
        if described or self.notes:
            lines.append("")
            lines.extend(described + [f"- {note}" for note in self.notes])
        return "\n".join(lines) + "\n"

    def print(self, file=None) -> None:
        print(self.markdown(), file=file or sys.stdout, flush=True)


# ----------------------------------------------------------------------------- comparing


def environment(device: str | torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    device = torch.device(device)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        env["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return env


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _as_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, dict):
        out = out.get("samples")
    return out if isinstance(out, torch.Tensor) else None


def _max_abs_diff(a: Any, b: Any) -> float | None:
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta is None or tb is None or ta.shape != tb.shape:
        return None
    return (ta.float() - tb.float()).abs().max().item()


def compare(
    baseline: Variant,
    variants: Sequence[Variant],
    *,
    repeats: int = 5,
    warmup: int = 1,
    steps: int | None = None,
    device: str | torch.device = "cpu",
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    quiet_wait_s: float = 0.0,
    quiet_threshold_cores: float = 0.25,
) -> Report:
    """Run ``warmup`` untimed rounds, then ``repeats`` timed rounds of baseline, *variants (in
    that order every round), in this process. ``steps`` (sampling steps per run) only serves the
    per-step columns. ``log`` gets one line per run (None: silent). On a CPU, ``quiet_wait_s`` > 0
    holds each timed run until other processes use fewer than ``quiet_threshold_cores`` cores
    (for at most that many seconds; the wait is not timed)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    everyone = [baseline, *variants]
    names = [v.name for v in everyone]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct: {names}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    probe = pick_probe(device)
    meter = ContentionMeter()
    started_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    env = environment(device)
    wall0 = time.perf_counter()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    first_out: dict[str, Any] = {}
    for r in range(warmup):
        for v in everyone:
            gc.collect()
            t0 = time.perf_counter()
            out = v.fn()
            sync()
            first_out.setdefault(v.name, _as_tensor(out))
            if log:
                log(f"warm-up {r + 1}/{warmup} {v.name}: {time.perf_counter() - t0:.3f} s")
            del out

    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[int | None]] = {n: [] for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    others: dict[str, list[float]] = {n: [] for n in names}
    waited = 0.0
    for r in range(repeats):
        for v in everyone:
            gc.collect()
            sync()
            if not cuda:
                waited += meter.wait_quiet(quiet_wait_s, quiet_threshold_cores)
            load = _load()
            probe.start()
            meter.start()
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = v.fn()
            sync()
            t1 = time.perf_counter()
            c1 = time.process_time()
            other = meter.stop()
            peak = probe.stop()
            first_out.setdefault(v.name, _as_tensor(out))
            del out
            times[v.name].append(t1 - t0)
            cpu[v.name].append(c1 - c0)
            peaks[v.name].append(peak)
            if load is not None:
                loads[v.name].append(load)
            if other is not None:
                others[v.name].append(other)
            if log:
                mem = "" if peak is None else f", peak +{peak / MiB:.0f} MiB"
                busy = "" if other is None else f", others used {other:.2f} cores"
                log(f"round {r + 1}/{repeats} {v.name}: {t1 - t0:.3f} s (CPU {c1 - c0:.2f} s{mem}{busy})")

    stats = []
    for v in everyone:
        diff = None if v is baseline else _max_abs_diff(first_out.get(v.name), first_out.get(baseline.name))
        stats.append(VariantStats(v.name, v.note, times[v.name], cpu[v.name], peaks[v.name], loads[v.name],
                                  others[v.name], diff))
    report = Report(
        baseline=baseline.name,
        variants=stats,
        repeats=repeats,
        warmup=warmup,
        steps=steps,
        device=str(device),
        memory_method=probe.method,
        wall_s=time.perf_counter() - wall0,
        started_at=started_at,
        meta=dict(meta or {}),
        environment=env,
    )
    cores = env.get("cpu_count")
    base = report.variants[0]
    if base.spread > 0.10:
        report.notes.append(
            f"noisy: the baseline's runs spread {base.spread:.0%} of their median; trust the paired "
            "ratios and the ratio of mins more than single numbers, or add --repeats"
        )
    contention = report.mean_contention
    spare = (cores or 1) - torch.get_num_threads()  # cores this process leaves to others
    if not cuda and contention is not None and contention > spare + 0.25:
        report.notes.append(
            f"busy machine: other processes used {contention:.2f} cores on average while timing, "
            f"more than the {max(spare, 0)} this process's {torch.get_num_threads()} thread(s) leave free; "
            "wall times include waiting for the CPU (the CPU-time ratio is less affected; "
            "--threads 1 helps on a small shared machine)"
        )
    if waited:
        report.extra["quiet_wait_total_s"] = waited
        report.notes.append(f"waited {waited:.0f} s in all (untimed) for other processes to go idle")
    return report
