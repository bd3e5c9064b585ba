"""CPU threads for torch, set before torch loads: passive OpenMP waits, and as many threads as
the CPUs this process may use.

OpenMP threads busy-wait between parallel regions by default. On a machine where anything else
runs (a CI runner, a laptop, a server beside its client) a 2-thread giellm process then gets
10-15x slower, fighting spinning threads for the cores. `OMP_WAIT_POLICY=PASSIVE` makes them
sleep; it is read once, when the OpenMP runtime starts, so it is set before `import torch`.

Sleeping at once costs an idle machine dearly, though: a decode step is hundreds of small
parallel regions, and waking a sleeping thread in a VM takes tens of microseconds (a 48-row
RMSNorm: 48 us spinning, 452 us passive). So threads spin briefly first: `GOMP_SPINCOUNT=1000`
(libgomp, which torch's Linux wheels use; about 10 us) keeps them awake across the gaps between
one step's ops and asleep across anything longer. Measured with the default model on 2 cores
(benchmarks/predict_profile.py, 128-192 stockmark dev sentences): idle, passive 6.7-8.2 rec/s,
1000 spins 8.7-10.5, 10,000 spins 11.7 (busy-waiting: 11.9); beside a process that keeps one
core busy, passive 6.5, 1000 spins 5.5, 10,000 spins 2.6.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

SPIN_COUNT = "1000"  # GOMP_SPINCOUNT: busy-wait iterations (~10 us) before a thread sleeps
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
    """Passive OpenMP waits after a short spin unless the user chose a policy or spin count;
    `threads` (default: the usable CPUs, or `OMP_NUM_THREADS` when the user set it) for torch.
    Returns the thread count."""
    if "OMP_WAIT_POLICY" not in os.environ:  # a chosen policy keeps libgomp's own spin count
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or usable_cpus())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # already loaded (a library caller): its pool can still be sized
        sys.modules["torch"].set_num_threads(threads)
    return threads
