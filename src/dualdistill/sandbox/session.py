"""A stateful sandbox session: one forked Python process per trajectory, blocks run in shared globals.

``Session.run(code)`` sends a block to the session process and waits while it reads the process's
stdout+stderr from a pipe. A block may run for ``timeout_s`` seconds of wall-clock time (``limit="wall"``,
the paper's rule), or of CPU time of all the session's processes together (``limit="cpu"``, read from the
session's cgroup), with a wall-clock backstop of ``max(10 x timeout_s, 5 s)`` for code that sleeps or
waits. CPU time does not grow when the machine is busy, so the same block times out, or not, with or
without load beside it; without a CPU-accounting cgroup, ``"cpu"`` falls back to wall time with a warning. It never re-runs earlier blocks. When a block ends the
process (timeout, crash, ``os._exit``, an output flood), the whole session is killed and the next block
runs in a fresh one, with a notice in front of its output and ``state_lost=True``.

Guarantees: ``run`` returns within about its wall limit (``timeout_s``, or the backstop) + 1 s whatever
the code does (ignoring SIGTERM,
forking, leaving threads behind); every process of a killed session is SIGKILLed. Output is at most
``output_limit`` characters plus a truncation marker.

A block has ended only when the session process has stopped itself after it (every thread frozen) and
everything it forked is dead; a per-session monitor process, which the model's code cannot reach, then
tells us. So code never runs between blocks, and the end of a block cannot be forged from inside.

Memory: with a cgroup (``memory_scope == "session"``, the default where this process can create one),
``memory_mb`` and ``max_procs`` bound all the session's processes together. Without one (``"process"``)
they bound each process, so a session may hold up to ``max_procs x memory_mb``.

Not thread-safe: use one Session per thread (or ``SandboxPool`` for asyncio). Not guaranteed: a block
whose code stops itself and is then continued by the next block finishes inside that next block's time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal

from dualdistill.core.config import check_bounds, setting
from dualdistill.sandbox._zygote import recv_msg, send_msg
from dualdistill.sandbox.cgroup import SessionCgroup
from dualdistill.sandbox.template import SandboxUnavailable, Template, get_template

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "crashed"]

TIMEOUT_MESSAGE = (
    "Error: Code execution timed out."  # the reference's marker (format.trajectory.EXECUTOR_ERROR_MARKERS)
)


@dataclass
class SandboxConfig:
    """Limits and behaviour of sandbox sessions. Every limit applies to one session."""

    timeout_s: float = setting(
        3.0,
        gt=0,
        help="Seconds per block: wall seconds (limit wall, the paper's) or CPU seconds (limit cpu).",
    )
    # "cpu": the block's CPU time (all the session's processes) counts, so results do not depend on the
    # machine's load; a wall-clock backstop (wall_limit_s) stops code that sleeps or waits.
    limit: Literal["wall", "cpu"] = setting("wall", help="What timeout_s counts: wall or cpu seconds.")
    # Without a cgroup, RLIMIT_CPU bounds each process on its own.
    cpu_time_s: int = setting(
        60, gt=0, help="CPU seconds for the whole session, all blocks and all its processes together."
    )
    memory_mb: int = setting(
        2048, gt=0, help="Memory of the session (cgroup) and address space of each process (MiB)."
    )
    max_procs: int = setting(
        64, gt=0, help="Processes + threads of the session (cgroup pids; RLIMIT_NPROC per-session uid)."
    )
    file_size_mb: int = setting(64, gt=0, help="Largest file the code may write (MiB, RLIMIT_FSIZE).")
    scratch_mb: int = setting(128, gt=0, help="Size of the session's private /tmp (a tmpfs, MiB).")
    max_open_files: int = setting(256, gt=0, help="Open files per process (RLIMIT_NOFILE).")
    output_limit: int = setting(
        2000, gt=0, help="Characters of output shown to the model; head and tail kept around a marker."
    )
    output_kill_bytes: int = setting(
        1_000_000, gt=0, help="A block printing more than this is killed (status output_limit)."
    )
    isolation: Literal["auto", "bwrap", "unshare", "none"] = setting(
        "auto", help="auto, bwrap, unshare or none (none: unisolated!)."
    )
    # "cgroup": the session's own control group, the sum over all its processes (refuse to start without
    # one); "rlimit": per process, so a session may hold max_procs x memory_mb; "auto": cgroup where this
    # process can make one.
    session_limits: Literal["auto", "cgroup", "rlimit"] = setting(
        "auto", help="How memory_mb and max_procs hold for the whole session: auto, cgroup or rlimit."
    )
    repl: bool = setting(False, help="Print the value of a bare last expression, like a REPL.")
    preimport: tuple[str, ...] = ("math", "numpy", "sympy")  # imported once in the template

    def __post_init__(self) -> None:
        check_bounds(self)
        # Literal values are checked by the config loader; these hold for configs built in code too.
        for name, allowed in (("limit", ("wall", "cpu")), ("isolation", ("auto", "bwrap", "unshare", "none")),
                              ("session_limits", ("auto", "cgroup", "rlimit"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be {'|'.join(allowed)}, got {getattr(self, name)!r}")
        self.preimport = tuple(self.preimport)

    @property
    def wall_limit_s(self) -> float:
        """The wall-clock bound of one block: ``timeout_s``, or the backstop of a CPU-time limit."""
        return max(10 * self.timeout_s, 5.0) if self.limit == "cpu" else self.timeout_s


_warned_no_cpu_clock = False


def _warn_no_cpu_clock() -> None:
    global _warned_no_cpu_clock
    if not _warned_no_cpu_clock:
        _warned_no_cpu_clock = True
        warnings.warn(
            "sandbox limit 'cpu' needs a cgroup with CPU accounting, which cannot be made here; "
            "blocks are limited by wall-clock time instead (results may then depend on machine load)",
            RuntimeWarning,
            stacklevel=3,
        )


@dataclass
class ExecResult:
    """What one block did. ``output`` is the text for ``<executor>``."""

    status: Status
    output: str
    duration_s: float
    state_lost: bool = False  # this block ran in a fresh session because the previous one was lost
    killed: bool = False  # the session was killed after this block; the next block starts fresh

    def to_dict(self) -> dict:
        return {"status": self.status, "output": self.output}


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` around a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n... [output truncated: {cut} characters omitted] ...\n{text[len(text) - half :]}"


@dataclass
class _Output:
    """Head and tail of a byte stream plus its total size; finds the end-of-block nonce, which never
    reaches ``text`` (a block stopped after it wrote the nonce, on a timeout or a spent CPU budget, left
    it in the pipe)."""

    keep: int
    nonce: bytes = b""
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            del self.tail[: max(0, len(self.tail) - self.keep)]

    def strip_suffix(self, nonce: bytes) -> bool:
        """Remove ``nonce`` (and anything after it) if it is in the kept bytes; True if found."""
        for buf in (self.tail, self.head):
            i = buf.rfind(nonce)
            if i >= 0:
                self.total -= len(buf) - i
                del buf[i:]
                return True
        return False

    def text(self, limit: int) -> str:
        if self.nonce:
            self.strip_suffix(self.nonce)
        if self.total <= len(self.head) + len(self.tail):
            return truncate(bytes(self.head + self.tail).decode("utf-8", "replace"), limit)
        head = bytes(self.head).decode("utf-8", "replace")
        tail = bytes(self.tail).decode("utf-8", "replace")
        cut = self.total - len(self.head) - len(self.tail)
        half = limit // 2
        return (
            f"{head[:half]}\n... [output truncated: about {cut + len(head) + len(tail) - 2 * half} "
            f"characters omitted] ...\n{tail[len(tail) - half :]}"
        )


class SessionClosed(RuntimeError):
    """``run`` or ``reset`` on a session after ``close``."""


class Session:
    """One stateful, isolated Python session. Use as a context manager; ``close`` kills its processes."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self._template: Template | None = None
        self._proc: dict | None = None  # {"pid", "uid", "scratch"} of the live session process
        self._sock: socket.socket | None = None
        self._out: int | None = None
        self._lost_reason: str | None = None
        self._cgroup: SessionCgroup | None = None
        self._closed = False
        self.start()

    @property
    def memory_scope(self) -> str:
        """``"session"`` when memory_mb bounds all processes together (a cgroup), else ``"process"``."""
        return "session" if self._cgroup is not None else "process"

    def _make_cgroup(self) -> SessionCgroup | None:
        c = self.config
        if c.session_limits == "rlimit":
            return None
        try:
            return SessionCgroup(c.memory_mb, c.max_procs)
        except OSError as e:
            if c.session_limits == "cgroup":
                raise SandboxUnavailable(
                    f"session_limits='cgroup' but no cgroup can be made here: {e}"
                ) from None
            return None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Fork a fresh session process from the template (no-op if one is running)."""
        self._check_open()
        if self._proc is not None:
            return
        c = self.config
        self._template = get_template(c.isolation, c.preimport)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        limits = {
            "RLIMIT_AS": c.memory_mb * 2**20,
            # soft < hard: the kernel checks the hard limit first, and SIGKILL would hide why it died.
            "RLIMIT_CPU": [int(c.cpu_time_s), int(c.cpu_time_s) + 1],
            "RLIMIT_NPROC": c.max_procs,
            "RLIMIT_FSIZE": c.file_size_mb * 2**20,
            "RLIMIT_NOFILE": c.max_open_files,
            "RLIMIT_CORE": 0,
        }
        self._cgroup = self._make_cgroup()
        cgroup_fds = self._cgroup.fds() if self._cgroup is not None else []
        try:
            spec = {"op": "spawn", "limits": limits, "scratch_mb": c.scratch_mb}
            self._proc = self._template.request(spec, [theirs.fileno(), out_w, *cgroup_fds])
        except BaseException:
            if self._cgroup is not None:
                self._cgroup.remove()
                self._cgroup = None
            raise
        finally:
            theirs.close()
            os.close(out_w)
            if self._cgroup is not None:
                self._cgroup.close_fds()  # the session joined through them; no need to hold them
        self._sock, self._out = mine, out_r
        os.set_blocking(out_r, False)

    def _kill(self) -> dict:
        """Kill every process of the session; returns the session process's exit info."""
        info: dict = {}
        if self._proc is not None and self._template is not None and self._template.alive():
            with contextlib.suppress(OSError, EOFError):
                info = self._template.request({"op": "kill", **self._proc})
        self._proc = None
        if self._cgroup is not None:
            info["oom"] = self._cgroup.oom_killed()
            self._cgroup.remove()
            self._cgroup = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._out is not None:
            os.close(self._out)
            self._out = None
        return info

    def _check_open(self) -> None:
        # A closed session never comes back: a pool counts it as gone, so a restart would run a
        # session outside the pool's bound (and outlive pool.close()).
        if self._closed:
            raise SessionClosed("this sandbox session is closed; open a new one")

    def reset(self) -> None:
        """Drop all state: kill the session process and start a fresh one."""
        self._check_open()
        self._kill()
        self._lost_reason = None
        self.start()

    def close(self) -> None:
        """Kill every process of the session; ``run`` and ``reset`` then raise ``SessionClosed``."""
        self._closed = True
        self._kill()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------ running a block

    def run(self, code: str) -> ExecResult:
        """Run one block in this session's globals; see the module docstring for what can happen."""
        self._check_open()
        start = time.monotonic()
        notice = ""
        lost = self._lost_reason is not None
        if lost:
            notice = (
                f"Note: the previous code block {self._lost_reason}, so the Python session was restarted "
                "and its state was lost (all earlier variables, functions and imports).\n"
            )
            self._lost_reason = None
        if self._proc is None or not self._template.alive():
            self._kill()
            self.start()
        status, text, killed = self._exchange(code)
        return ExecResult(status, notice + text, time.monotonic() - start, lost, killed)

    def _cpu_clock(self):
        """A function giving the CPU seconds of all the session's processes, or None without a cgroup
        that accounts them (then ``limit="cpu"`` falls back to wall time, with a warning)."""
        clock = self._cgroup.cpu_seconds if self._cgroup is not None else None
        if clock is None or clock() is None:
            if self.config.limit == "cpu":
                _warn_no_cpu_clock()
            return None
        return clock

    def _exchange(self, code: str) -> tuple[Status, str, bool]:
        c = self.config
        nonce = "\x00end-" + secrets.token_hex(8) + "\x00"
        out = _Output(keep=max(4 * c.output_limit, 4096), nonce=nonce.encode())
        clock = self._cpu_clock()
        cpu_block = c.limit == "cpu" and clock is not None  # the block's limit counts CPU time
        cpu_start = clock() if clock else 0.0
        # The block's time starts when it is handed over, not before a restart of the session: a restart
        # that is slow on a loaded machine must not use up the wall-clock backstop of a CPU-time limit.
        start = time.monotonic()
        try:
            send_msg(self._sock, {"code": code, "nonce": nonce, "repl": c.repl})
        except OSError:
            return self._fail("crashed", out, "ended unexpectedly")
        deadline = start + (c.wall_limit_s if cpu_block else c.timeout_s)
        # The clock is read between waits (the block's CPU limit, the session's CPU budget); 2% of the
        # block's limit keeps the overshoot small.
        tick = min(0.05, max(0.002, c.timeout_s / 50))
        poller = select.poll()  # poll, not select: descriptors past 1024 are fine in a long pool
        for fd in (self._sock.fileno(), self._out):
            poller.register(fd, select.POLLIN)
        reply = None
        while reply is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._fail("timeout", out, "timed out", backstop=cpu_block)
            wait = min(left, tick) if clock else left
            ready = {fd for fd, _ in poller.poll(wait * 1000)}
            if self._out in ready:
                self._read(out)
                if out.total > c.output_kill_bytes:
                    return self._fail("output_limit", out, "printed too much output")
            if self._sock.fileno() in ready:
                try:
                    reply, _ = recv_msg(self._sock)
                except (EOFError, OSError):
                    return self._fail("crashed", out, "crashed")
            elif clock:
                used = clock()
                if cpu_block and used - cpu_start >= c.timeout_s:
                    return self._fail("timeout", out, "ran past its CPU-time limit", cpu=True)
                if used >= c.cpu_time_s:
                    return self._fail("timeout", out, "used up the session's CPU time", budget=True)
        # The reply is sent after the nonce was written: read the pipe up to the nonce.
        grace = time.monotonic() + 2.0
        pipe = select.poll()
        pipe.register(self._out, select.POLLIN)
        while not out.strip_suffix(nonce.encode()) and time.monotonic() < grace:
            if pipe.poll(100) and not self._read(out):
                break
        kind = reply.get("kind")
        status: Status = kind if kind in ("ok", "error", "memory") else "crashed"
        text = out.text(c.output_limit)
        if status == "ok" and out.total > c.output_limit:
            status = "output_limit"
        return status, text, False

    def _read(self, out: _Output) -> bool:
        """Read what is in the pipe; False at EOF."""
        got = False
        while True:
            try:
                data = os.read(self._out, 65536)
            except BlockingIOError:
                return True
            if not data:
                return got
            got = True
            out.add(data)

    def _fail(
        self,
        status: Status,
        out: _Output,
        reason: str,
        *,
        backstop: bool = False,
        cpu: bool = False,
        budget: bool = False,
    ) -> tuple[Status, str, bool]:
        self._read(out)
        info = self._kill()
        sig, code = info.get("signal"), info.get("exit")
        if status == "crashed" and sig == signal.SIGXCPU:
            status, reason = "timeout", "used up its CPU time"
        if status == "crashed" and info.get("oom"):
            status = "memory"
        text = out.text(self.config.output_limit)
        if text and not text.endswith("\n"):
            text += "\n"
        if status == "timeout" and (budget or sig == signal.SIGXCPU):
            text += f"{TIMEOUT_MESSAGE} (CPU time limit of the session: {self.config.cpu_time_s} s)"
        elif status == "timeout" and backstop:
            text += f"{TIMEOUT_MESSAGE} (wall-clock limit: {self.config.wall_limit_s:g} s)"
        elif status == "timeout" and cpu:
            text += f"{TIMEOUT_MESSAGE} (limit: {self.config.timeout_s:g} s of CPU time)"
        elif status == "timeout":
            text += f"{TIMEOUT_MESSAGE} (limit: {self.config.timeout_s:g} s)"
        elif status == "memory":
            text += (
                f"MemoryError: the session ran out of memory (limit: {self.config.memory_mb} MiB for all "
                "its processes together)."
            )
            reason = "ran out of memory"
        elif status == "output_limit":
            text += f"Error: output limit exceeded (more than {self.config.output_kill_bytes} bytes); execution stopped."
        elif sig is not None:
            text += f"Error: the Python process crashed ({signal.Signals(sig).name})."
            reason = f"crashed the Python process ({signal.Signals(sig).name})"
        else:
            text += f"Error: the Python process exited (exit code {code})."
            reason = "exited the Python process"
        self._lost_reason = reason
        return status, text, True
