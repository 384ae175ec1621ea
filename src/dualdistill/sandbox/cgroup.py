"""Per-session control groups: one memory limit, one process limit and one CPU clock for a whole session.

RLIMIT_AS limits each process on its own, so a session that forks N children could hold N times the
limit. Where this process may create control groups (root, or a delegated cgroup v2 subtree), every
session gets its own group, made here on the host side: ``memory`` caps the sum of all its processes
(page cache and its /tmp tmpfs included; swap too when the kernel accounts it) and ``pids`` caps their
number. The session process joins the group itself, right after fork and before it drops root, by
writing ``0`` to ``cgroup.procs`` files this process opened and passed to it, so the sandbox never sees
/sys. Its descendants inherit the group and cannot leave it (leaving needs write access to another
group's ``cgroup.procs``).

Guarantees: with ``SessionCgroup`` in use, the session's processes together stay under ``memory_mb``;
the kernel OOM-kills inside the group instead of the host. ``oom_killed()`` tells a memory kill from a
crash. ``cpu_seconds()`` is the CPU time of all the session's processes together (cgroup v1 ``cpuacct``
or v2 ``cpu.stat``), or None where no CPU accounting group can be made; the session's CPU-time limit
(``SandboxConfig.limit == "cpu"``) reads it. ``available()`` is False (and sessions fall back to per-process RLIMIT_AS, so the bound is then
``max_procs x memory_mb``) when neither cgroup v1 nor a delegated v2 subtree with the memory and pids
controllers is writable here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
# A group left by a SIGKILLed dualdistill process is empty; one of a live process is empty only for the
# moment between its creation and its session joining it. Older empty groups are stale.
_STALE_AFTER_S = 60.0


def _own_groups() -> dict[str, Path]:
    """Writable parents per controller: ``{"memory": dir, "pids": dir[, "cpuacct": dir]}`` (v1), or one
    v2 dir for all (v2 keeps CPU time in every group's ``cpu.stat``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            for mount in (_ROOT / "unified", _ROOT):
                if (mount / "cgroup.controllers").exists():
                    v2 = mount / rel
                    break
        names = controllers.split(",")
        for c in names:
            if c in ("memory", "pids", "cpuacct"):
                # v1 mounts a co-mounted hierarchy once ("cpu,cpuacct"), often with a symlink per name.
                mount = next((_ROOT / m for m in (c, ",".join(names)) if (_ROOT / m).is_dir()), None)
                if mount is not None:
                    v1[c] = mount / rel
    if {"memory", "pids"} <= set(v1):
        if "cpuacct" in v1 and not os.access(v1["cpuacct"], os.W_OK):
            del v1["cpuacct"]
        return v1
    if v2 is not None:
        with contextlib.suppress(OSError):
            if {"memory", "pids"} <= set((v2 / "cgroup.subtree_control").read_text().split()):
                return {"memory": v2, "pids": v2, "cpuacct": v2}
    return {}


class SessionCgroup:
    """The control group(s) of one session. ``fds()`` go to the session process; ``remove()`` at the end."""

    def __init__(self, memory_mb: int, max_procs: int):
        parents = _own_groups()
        if not parents:
            raise OSError("no writable memory and pids cgroups here")
        _sweep(parents)
        # A random name: the session can read its group's name in /proc/self/cgroup, and a host pid
        # would tell it something about the host.
        name = f"dualdistill-{secrets.token_hex(8)}"
        self.dirs: list[Path] = []
        self._fds: list[int] = []
        self._usage: Path | None = None
        try:
            for controller in ("memory", "pids", "cpuacct"):
                if controller not in parents:
                    continue  # no CPU accounting here: cpu_seconds() says None
                d = parents[controller] / name
                if d in self.dirs:
                    continue  # cgroup v2: one directory holds both controllers
                d.mkdir()
                self.dirs.append(d)
            self._limit(memory_mb * 2**20, max_procs)
            self._fds = [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs]
            self._usage = _usage_file(self.dirs)
        except OSError:
            self.remove()
            raise

    def _limit(self, memory: int, procs: int) -> None:
        for d in self.dirs:
            if (d / "memory.max").exists():  # v2
                (d / "memory.max").write_text(str(memory))
                with contextlib.suppress(OSError):
                    (d / "memory.swap.max").write_text("0")
            elif (d / "memory.limit_in_bytes").exists():  # v1
                (d / "memory.limit_in_bytes").write_text(str(memory))
                with contextlib.suppress(OSError):  # only when the kernel accounts swap
                    (d / "memory.memsw.limit_in_bytes").write_text(str(memory))
            if (d / "pids.max").exists():
                (d / "pids.max").write_text(str(procs))

    def fds(self) -> list[int]:
        return list(self._fds)

    def close_fds(self) -> None:
        """Close the ``cgroup.procs`` files once the session has them (a long pool holds no more)."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the group so far, or None without CPU accounting."""
        if self._usage is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            text = self._usage.read_text()
            if self._usage.name == "cpuacct.usage":  # v1: nanoseconds
                return int(text) / 1e9
            for line in text.splitlines():  # v2: usage_usec
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this group for memory."""
        for d in self.dirs:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                with contextlib.suppress(OSError, ValueError):
                    for line in (d / name).read_text().splitlines():
                        k, _, v = line.partition(" ")
                        if k == key and int(v) > 0:
                            return True
        return False

    def remove(self) -> None:
        """Close the passed files and delete the group(s); call after every process in them is dead."""
        self.close_fds()
        for d in self.dirs:
            for _ in range(200):  # a SIGKILLed process leaves its group a moment after it is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        self.dirs = []


def _usage_file(dirs: list[Path]) -> Path | None:
    """v1 ``cpuacct.usage`` (nanoseconds), else v2 ``cpu.stat`` (its ``usage_usec`` line), else None."""
    for name in ("cpuacct.usage", "cpu.stat"):
        for d in dirs:
            if (d / name).exists() and (name == "cpuacct.usage" or "usage_usec" in (d / name).read_text()):
                return d / name
    return None


_swept = False


def _sweep(parents: dict[str, Path]) -> None:
    """Once per process: remove empty groups left by a dualdistill process that was SIGKILLed."""
    global _swept
    if _swept:
        return
    _swept = True
    now = time.time()
    for parent in set(parents.values()):
        for d in parent.glob("dualdistill-*"):
            with contextlib.suppress(OSError):
                if now - d.stat().st_mtime > _STALE_AFTER_S:
                    d.rmdir()  # fails, harmlessly, if something still lives in it


def available() -> bool:
    """Whether sessions here get a cgroup (tries to create and remove one)."""
    try:
        SessionCgroup(64, 8).remove()
    except OSError:
        return False
    return True
