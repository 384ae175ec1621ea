"""Sandbox: a secure, stateful, fast executor for model-written Python.

    from dualdistill.sandbox import SandboxConfig, Session, SandboxPool
    with Session(SandboxConfig(timeout_s=3)) as s:
        s.run("x = 6 * 7")
        print(s.run("print(x)").output)          # 42
    async with SandboxPool(config, max_concurrency=16).session() as s:
        r = await s.run(code)

How it works: a template ("zygote") process is started once inside the isolation with numpy and sympy
already imported; each session is a child forked from it (a few ms), holding the model's globals from
block to block (earlier blocks are never re-run). See template.py (isolation), session.py (one session),
pool.py (asyncio), _zygote.py (the code inside the sandbox).

Guarantees (with bubblewrap or unshare, as root, i.e. this project's machines and CI):
- One session, one world. Every session has its own network namespace (a loopback only, and down: no
  connection leaves it or reaches another session, over TCP, UDP or an abstract unix socket), its own IPC
  namespace (System V shared memory, queues and semaphores, and POSIX queues, die with the session) and
  its own mount namespace with private tmpfs at ``/tmp`` and ``/dev/shm``.
- Own PID namespace for the template and its sessions: the host's processes (the parent, the teachers'
  API clients) are invisible, and each session's ``/proc`` (``hidepid``) shows only its own processes:
  not another session's command lines, not the launcher's.
- Read-only system: the host file system is mounted read-only; the parent's home directory is hidden
  (replaced by an empty tmpfs, with only the Python installation bound back).
- Writable scratch: ``/tmp`` (also ``$HOME``, the working directory) is a private tmpfs of
  ``scratch_mb`` per session; the kernel frees it when the session's processes end.
- No inherited environment: the sandbox starts from a fixed environment (template.SANDBOX_ENV); API keys
  and every other variable of the parent are absent.
- Limits per session: wall clock (or CPU time, ``limit="cpu"``) per block; CPU seconds for the whole
  session and memory and processes+threads of the whole session, all its processes together (its
  cgroup); file size and open files per process. Each session runs under its own fresh uid without
  capabilities, so one session cannot signal, ptrace or read the files of another session, of the
  template, or of the host's root.
- No user namespaces: a seccomp filter (x86_64, aarch64) refuses ``unshare``/``clone`` with
  CLONE_NEWUSER and ``setns``, so the code cannot regain capabilities in a namespace of its own. The
  same filter refuses the kernel keyrings (``add_key``, ``request_key``, ``keyctl``: shared by uid, they
  would outlive a session) and every socket family but Unix and IP.
- A closed session stays closed: ``run`` and ``reset`` raise ``SessionClosed``.
- Nothing runs between blocks: after every block the monitor (outside the code's reach) kills every
  other process of the session's uid, whatever the code did to itself (hooks, a disabled subreaper,
  siblings made with CLONE_PARENT).
- Nothing hangs: on timeout, crash or output flood every process of the session's uid is SIGKILLed
  (ignoring SIGTERM, forking, setsid, or leaving threads running does not help); the next block gets a
  notice that the state was lost and runs in a fresh session.
- Without a working isolation mechanism the sandbox refuses to start (``SandboxUnavailable``);
  ``isolation="none"`` runs unisolated only when asked, and warns loudly.

Not guaranteed:
- World-readable host files outside the hidden home directory can be read (read-only); the OS
  directories and the Python installation are visible, and so are their host paths in
  ``/proc/self/mountinfo`` (the checkout is not: the template script is copied in, not bound).
- Without a cgroup (non-root, or no writable cgroup tree), memory, processes and the CPU-time budget are
  bounded per process (RLIMIT_AS, RLIMIT_NPROC, RLIMIT_CPU), and ``limit="cpu"`` falls back to wall time.
- Kernel exploits, CPU side channels, and a session using the full CPU for up to its limit while
  others run are out of scope; the seccomp filter is skipped on other machine types.
- As non-root (bwrap in a user namespace) all sessions share one uid: RLIMIT_NPROC then counts the
  whole pool, sessions could signal each other, and scratch dirs share one tmpfs.
- ``isolation="unshare"`` (util-linux, root only) is the fallback when bwrap is missing: same namespaces,
  read-only remounts and hidden home; ``isolation="none"`` gives only rlimits, a cleared environment and
  a private scratch directory (plus a per-session uid when run as root).
- A block may leave no process behind (background subprocesses do not survive to the next block).
  Threads of the session process do, frozen between blocks.
"""

from dualdistill.sandbox.pool import AsyncSession, SandboxPool
from dualdistill.sandbox.session import (
    TIMEOUT_MESSAGE,
    ExecResult,
    SandboxConfig,
    Session,
    SessionClosed,
    truncate,
)
from dualdistill.sandbox.template import SandboxUnavailable

__all__ = [
    "TIMEOUT_MESSAGE",
    "AsyncSession",
    "ExecResult",
    "SandboxConfig",
    "SandboxPool",
    "SandboxUnavailable",
    "Session",
    "SessionClosed",
    "truncate",
]
