"""CPU threads for torch, set before torch loads: passive OpenMP waits, and as many threads as
the CPUs this process may use.

OpenMP threads busy-wait between parallel regions by default. On a machine where anything else
runs (a CI runner, a laptop, a server beside its client) a 2-thread giellm process then gets
10-15x slower, fighting spinning threads for the cores. `OMP_WAIT_POLICY=PASSIVE` makes them
sleep; it is read once, when the OpenMP runtime starts, so it is set before `import torch`.

Sleeping at once costs an idle machine some speed: a decode step is hundreds of small parallel
regions, and waking a sleeping thread in a VM takes tens of microseconds. A short spin first
(`GOMP_SPINCOUNT=1000`, ~10 us, libgomp) decodes the default model 20-30% faster on an idle
2-core machine (benchmarks/predict_profile.py: 534 stockmark dev, 8.0 -> 10.2 rec/s with the
fused norms) but slower beside a process that keeps one core busy (96 sentences: passive 6.5
rec/s, 1000 spins 5.5, 10,000 spins 2.6). So giellm stays passive; the spin is the user's
choice for a machine that runs nothing else.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = tuple(Path("/sys/fs/cgroup/cpu") / f"cpu.cfs_{n}_us" for n in ("quota", "period"))


def cgroup_cpus() -> int | None:
    """The CPU quota of this process's cgroup, rounded up (None when unlimited or unknown)."""
    try:
        if CGROUP_V2.exists():
            quota, period = CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else math.ceil(int(quota) / int(period))
        quota_file, period_file = CGROUP_V1
        if quota_file.exists():
            quota_us = int(quota_file.read_text())
            return None if quota_us <= 0 else math.ceil(quota_us / int(period_file.read_text()))
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(cpus, quota) if quota else cpus)


def configure_threads(threads: int | None = None) -> int:
    """Passive OpenMP waits unless the user chose a policy; `threads` (default: the usable CPUs,
    or `OMP_NUM_THREADS` when the user set it) for torch. Returns the thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or usable_cpus())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # already loaded (a library caller): its pool can still be sized
        sys.modules["torch"].set_num_threads(threads)
    return threads
