"""How many intra-op threads a training run uses, chosen from the model's size and from the cores this process
can actually get, and re-checked while it runs.

A CPU training step is hundreds of small OpenMP parallel regions, and each ends at a barrier that waits for its
slowest thread. On an idle machine one thread per core is fastest; beside another CPU-bound process one of our
threads keeps losing its core, every barrier waits for it, and the waiting threads spin on the cores the others
need (LeNet-5 on 2 cores beside a 2-thread process: 2 threads ran at 15 % of their idle speed, 1 thread at 57 %).
So, unless ``--threads N`` (``TrainConfig.num_threads``) or ``OMP_NUM_THREADS`` fixes the count:

* the budget is the cores the process may use: its CPU affinity and its cgroup's CPU quota (cgroup v2
  ``cpu.max`` or v1 ``cpu.cfs_quota_us``), whichever is smaller;
* the model's size caps it: a step with less than :data:`FLOPS_PER_THREAD` of work per thread is split no
  further (a tiny model on 64 cores pays the barriers without the work to share);
* every :data:`RECHECK_SECONDS` the policy reads how much CPU time other processes took on our cores over the
  interval (``/proc/stat`` of the CPUs in our affinity, less our own time from ``/proc/self/stat``) and uses the
  cores left free, so it drops to one thread when a competing job starts and goes back up when it ends;
* the first choice, made before any interval could be measured, starts from the load average, and when that
  would cost threads a :data:`SAMPLE_SECONDS` look at ``/proc/stat`` decides (the load average counts this
  process's own work of a moment ago too).

How OpenMP threads wait at those barriers is set before torch loads, in :mod:`cnnkit.train.openmp`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .callbacks import Callback
from .openmp import describe_wait_policy

# The least work (FLOPs of a training step) worth a thread of its own. LeNet-5 at batch 8 (20 MFLOP a step) still
# trained 6 % faster on 2 threads than on 1 (3,434 against 3,218 img/s, 2-core Xeon, load ~2); more cores were not
# measured, so this is a floor, not a fit.
FLOPS_PER_THREAD = 10e6
RECHECK_SECONDS = 5.0
FIRST_LOOK_SECONDS = 1.0  # after a first choice made from the load average alone
# When the load average says others are busy, a look this long at /proc/stat before choosing: the load average
# also counts this process's own recent work (a previous run in the same process, or the command before), which
# made back-to-back runs start on one thread on an idle machine. 12 clock ticks: enough to tell 0 from 1 core.
SAMPLE_SECONDS = 0.12
FREE_CORE_ROUNDING = 0.3  # a core 70 % free counts as free: light background work (an editor) keeps a thread


# ------------------------------------------------------------------------------------------ what we may use
def affinity_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def cgroup_quota(cgroup_list: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cores this process's cgroup may use per unit of time (``cpu.max`` "200000 100000" is 2.0), or None
    when there is no quota. The own cgroup's file is read where it is mounted, else the root's."""
    try:
        lines = cgroup_list.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2: "0::/path"
            candidates = [(root / relative / "cpu.max", None), (root / "cpu.max", None)]
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            base = root / "cpu"
            candidates = [(base / relative / "cpu.cfs_quota_us", base / relative / "cpu.cfs_period_us"),
                          (base / "cpu.cfs_quota_us", base / "cpu.cfs_period_us")]
        else:
            continue
        for quota_file, period_file in candidates:
            quota = _read_quota(quota_file, period_file)
            if quota is not False:
                return quota
    return None


def _read_quota(quota_file: Path, period_file: Path | None) -> float | None | bool:
    """The quota in cores, None for "no limit", False when the file is not there."""
    try:
        fields = quota_file.read_text().split()
        if period_file is not None:
            fields.append(period_file.read_text().strip())
    except OSError:
        return False
    quota, period = fields[0], fields[1]
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def core_budget(cpus: int, quota: float | None) -> int:
    """Threads the process may run at once: its CPUs, or fewer when the cgroup's quota says so."""
    return max(1, min(cpus, int(quota + 0.01)) if quota is not None else cpus)


def size_cap(flops_per_step: float | None) -> int | None:
    """The most threads a training step of this many FLOPs is worth (None: unknown, no cap)."""
    return None if not flops_per_step else max(1, int(flops_per_step / FLOPS_PER_THREAD))


# ------------------------------------------------------------------------------------------ what others use
@dataclasses.dataclass(frozen=True)
class CpuTimes:
    """Clock ticks, summed over the CPUs we may run on: all their time, their busy time, and this process's."""

    total: int
    busy: int
    own: int


def read_cpu_times(cpus: set[int], proc: Path = Path("/proc")) -> CpuTimes | None:
    """None where /proc is not Linux's (then the policy keeps its first choice)."""
    try:
        stat = (proc / "stat").read_text().splitlines()
        own_fields = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = busy = 0
    for line in stat:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]  # steal counts as busy: the hypervisor took the core
    own = int(own_fields[11]) + int(own_fields[12])  # utime, stime of all our threads (fields 14, 15 of stat)
    return CpuTimes(total, busy, own)


def others_busy_cores(before: CpuTimes, after: CpuTimes, cpus: int) -> float:
    """Cores other processes kept busy between two readings, on average."""
    elapsed = (after.total - before.total) / cpus  # ticks of one CPU's clock
    if elapsed <= 0:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(float(cpus), max(0.0, others / elapsed))


def load_average_busy_cores(cpus: int, online: int | None = None, loadavg: Path = Path("/proc/loadavg")) -> float:
    """A first guess, before any interval has been measured: the 1-minute load average, scaled to our share of
    the machine's CPUs (a container pinned to 2 of 64 CPUs sees the host's load)."""
    try:
        load = float(loadavg.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return min(float(cpus), load * cpus / max(cpus, online or os.cpu_count() or cpus))


def choose_threads(budget: int, cpus: int, others: float, cap: int | None = None) -> int:
    """The cores left to us: the budget, less what other processes use on our CPUs, at most the size cap."""
    free = cpus - others
    threads = min(budget, math.floor(free + FREE_CORE_ROUNDING))
    if cap is not None:
        threads = min(threads, cap)
    return max(1, threads)


# ------------------------------------------------------------------------------------------ the policy
class ThreadPolicy(Callback):
    """Chooses ``torch``'s intra-op threads when training starts (:meth:`start`) and every ``interval`` seconds
    after (``on_batch_end``). Other processes include our own data-loading workers: they need cores too. The
    readers and the setter are arguments so tests can drive it; the defaults read this machine."""

    def __init__(self, flops_per_step: float | None = None, interval: float = RECHECK_SECONDS,
                 cpus: set[int] | None = None, quota: float | None | bool = False,
                 read_times: Callable[[], CpuTimes | None] | None = None,
                 first_guess: Callable[[], float] | None = None,
                 set_threads: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = print, since: CpuTimes | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.cpus = affinity_cpus() if cpus is None else cpus
        self.quota = cgroup_quota() if quota is False else quota
        self.budget = core_budget(len(self.cpus), self.quota)
        self.cap = size_cap(flops_per_step)
        self.flops_per_step = flops_per_step
        self.interval, self.clock, self.log, self.sleep = interval, clock, log, sleep
        self.read_times = read_times or (lambda: read_cpu_times(self.cpus))
        self.first_guess = first_guess or (lambda: load_average_busy_cores(len(self.cpus)))
        self.set_threads = set_threads or _torch_set_threads
        self.threads: int | None = None
        self.changes: list[tuple[int, int, float]] = []  # (from, to, others' cores) at each switch
        # The first interval starts now, or at ``since`` (the trainer's construction: setting up the model and data).
        self._last_times = since or self.read_times()
        self._last_check = self.clock()

    def start(self) -> str:
        """Choose the first thread count and describe the policy (the trainer prints it)."""
        others, measured = self._others_since_last()
        source = ""
        if not measured:  # constructed a moment ago: guess from the load average
            others, source = self.first_guess(), " (load average)"
            if self._fewer_threads_for(others):  # is that others, or our own work a moment ago? look now
                self.sleep(SAMPLE_SECONDS)
                sampled, measured = self._others_since_last()
                if measured:
                    others, source = sampled, f" (a {SAMPLE_SECONDS:g} s look; the load average said {others:.1f})"
        if not measured:  # still a guess: look again in a second
            self._last_check -= self.interval - min(self.interval, FIRST_LOOK_SECONDS)
        self.threads = choose_threads(self.budget, len(self.cpus), others, self.cap)
        self.set_threads(self.threads)
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup quota {self.quota:g} cores"
        size = ("" if self.cap is None else
                f", the model's {self.flops_per_step / 1e9:.2g} GFLOP per step is worth up to {self.cap}")
        return (f"threads: {self.threads} (automatic: {len(self.cpus)} CPUs in our affinity, {quota}{size}; other "
                f"processes busy on {others:.1f} cores{source}; re-checked every "
                f"{self.interval:g} s; --threads N fixes it); {describe_wait_policy()}")

    def _fewer_threads_for(self, others: float) -> bool:
        cpus = len(self.cpus)
        return choose_threads(self.budget, cpus, others, self.cap) < choose_threads(self.budget, cpus, 0.0, self.cap)

    def on_batch_end(self, trainer, batch) -> None:
        if self.threads is not None and self.clock() - self._last_check >= self.interval:
            self.recheck()

    def recheck(self) -> int:
        others, measured = self._others_since_last()
        if measured:
            chosen = choose_threads(self.budget, len(self.cpus), others, self.cap)
            if chosen != self.threads:
                self.changes.append((self.threads, chosen, others))
                self.log(f"threads: {self.threads} -> {chosen} (other processes busy on {others:.1f} of "
                         f"{len(self.cpus)} cores)")
                self.threads = chosen
                self.set_threads(chosen)
        return self.threads

    def _others_since_last(self) -> tuple[float, bool]:
        times, now = self.read_times(), self.clock()
        previous, self._last_times, self._last_check = self._last_times, times, now
        if times is None or previous is None or times.total - previous.total < 10 * len(self.cpus):
            return 0.0, False  # under ~0.1 s of clock ticks: too short to say
        return others_busy_cores(previous, times, len(self.cpus)), True


def _torch_set_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def automatic_threads(num_threads: int | None, world_size: int, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the thread count is fixed (then no policy runs), or None when the policy chooses it."""
    if num_threads:
        return f"threads: {num_threads} (--threads / num_threads)"
    if "OMP_NUM_THREADS" in environ:
        return f"threads: {environ['OMP_NUM_THREADS']} (OMP_NUM_THREADS)"
    if world_size > 1:
        return "threads: set by the launcher for each of the data-parallel processes"
    return None


def training_flops_per_step(model, input_shape: tuple[int, ...], batch_size: int) -> float | None:
    """FLOPs of one training step (forward and backward: three forward passes) counted by torch's
    FlopCounterMode on one image; None for a model that cannot run one image through ``forward`` alone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters(), None)
    if parameter is None:
        return None
    was_training = model.training
    model.eval()  # one image: BatchNorm in training mode would refuse it
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
        return 3.0 * counter.get_total_flops() * batch_size
    except Exception:  # noqa: BLE001  (a GAN, a compressor...: their forward is not one image in, so no cap)
        return None
    finally:
        model.train(was_training)
