"""Where a run's CPU went: the servers' process trees, this process, and the whole machine.

On a 2-core machine the emulator, the local Convex server and the contender share the same
cores, and anything else running on the machine takes from all of them. ``CpuMeter`` takes
two snapshots and reports the difference per named process tree, plus what the machine as a
whole was busy with that none of them (nor the contender, measured by ``wait4``) accounts for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid → (ppid, user+system CPU seconds) for every live process."""
    table: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def tree_cpu(root: int, table: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of ``root`` and its live descendants (exited ones are counted by their
    parent's cumulative time only once reaped; the servers here keep their children)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
            todo.extend(children.get(pid, []))
    return total


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


@dataclass
class CpuSnapshot:
    trees: dict[str, float]
    own: float
    machine: float


class CpuMeter:
    """``meter.start()`` … ``meter.stop(contender_cpu)`` → seconds per tree, and ``other``."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._start: CpuSnapshot | None = None

    def snapshot(self) -> CpuSnapshot:
        table = _proc_table()
        times = os.times()
        return CpuSnapshot(
            trees={name: tree_cpu(pid, table) for name, pid in self.roots.items()},
            own=times.user + times.system, machine=machine_busy())

    def start(self) -> None:
        self._start = self.snapshot()

    def stop(self, contender_cpu: float) -> dict[str, float]:
        assert self._start is not None
        end = self.snapshot()
        used = {name: end.trees[name] - self._start.trees.get(name, 0.0) for name in end.trees}
        used["bench"] = end.own - self._start.own
        machine = end.machine - self._start.machine
        used["other"] = max(0.0, machine - contender_cpu - sum(used.values()))
        used["machine"] = machine
        return used
