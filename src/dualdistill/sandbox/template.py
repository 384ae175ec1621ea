"""Start and talk to the template ("zygote") process that sessions are forked from.

One template runs per distinct launch setting (isolation mode, pre-imports, scratch size) and is shared
by every ``Session`` and ``SandboxPool`` in this process; it is started on first use and stopped at exit.
The template lives inside the isolation (bubblewrap, else ``unshare``): a new PID, network, IPC and UTS
namespace, a root file system that holds only ``visible_paths()`` read-only (the OS programs and
libraries, the loader's files of /etc and the Python installation; not the checkout, home directories,
/sys or anything else of the host), a cleared environment, and ``/tmp`` a private tmpfs per session.

Guarantees: a template that fails to start raises ``SandboxUnavailable`` with the launcher's stderr; with
``isolation="auto"`` and no working mechanism the sandbox refuses to start (it never silently runs
unisolated). ``isolation="none"`` logs a loud warning every time a template starts.
Not guaranteed: the ``unshare`` fallback needs root (the template builds its root and chroots itself).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from dualdistill.sandbox._zygote import recv_msg, send_msg

log = logging.getLogger(__name__)

ZYGOTE = Path(__file__).with_name("_zygote.py")

# The only environment the sandbox sees. Thread pools are pinned to one thread so that OpenBLAS/OpenMP
# start under RLIMIT_NPROC/RLIMIT_AS (a pool sized to the host's cores fails to start or eats memory).
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}

# Capabilities the template keeps inside bwrap: switch each session to a fresh uid (SETUID/SETGID),
# mount its private /tmp (SYS_ADMIN), chown it (CHOWN), and kill a session's processes (KILL).
# Sessions lose all of them when they switch uid.
TEMPLATE_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_KILL")


class SandboxUnavailable(RuntimeError):
    """No isolation mechanism works here (or the template failed to start)."""


@dataclass(frozen=True)
class LaunchSpec:
    isolation: str  # "auto" | "bwrap" | "unshare" | "none"
    preimport: tuple[str, ...]


def _python_binds() -> list[str]:
    """Directories the interpreter needs, to bind back under a hidden home directory."""
    paths = {sys.base_prefix, sys.prefix, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})


# What model code may see of the host: the operating system's programs and libraries, the files of /etc
# that the dynamic loader and the C library read, and the Python installation. Everything else (the
# checkout, home directories, /work, /opt, /srv, /var, /mnt, /sys and the rest of /etc) is absent.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
)
ZYGOTE_INSIDE = "/run/dualdistill/_zygote.py"  # the template script alone, not the package around it


def visible_paths() -> list[tuple[str, str]]:
    """``(kind, path)`` of everything the sandbox shows: ``symlink`` (merged /usr) or ``bind`` (read-only)."""
    out: list[tuple[str, str]] = []
    for p in (*SYSTEM_DIRS, *ETC_FILES):
        if os.path.islink(p) and p in SYSTEM_DIRS:
            out.append(("symlink", p))
        elif os.path.exists(p):
            out.append(("bind", p))
    covered = [p for kind, p in out if kind == "bind"]
    for p in _python_binds():
        if not any(p == c or p.startswith(c + "/") for c in covered):
            out.append(("bind", p))
    return out


def _bwrap_argv(python: str, script_fd: int) -> list[str]:
    argv = [
        "bwrap",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--perms",
        "0755",
        "--dir",
        "/etc",
    ]
    for kind, p in visible_paths():
        if kind == "symlink":
            argv += ["--symlink", os.readlink(p), p]
            continue
        # bwrap creates missing parents 0700; create them 0755 so a session's uid can traverse them.
        parts = Path(p).parts
        for i in range(2, len(parts)):
            argv += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        argv += ["--ro-bind", p, p]
    # The script is copied in (--file), not bound: a bind mount would show its host path, the checkout's,
    # in /proc/self/mountinfo.
    argv += [
        "--perms",
        "0755",
        "--dir",
        "/run/dualdistill",
        "--perms",
        "0644",
        "--file",
        str(script_fd),
        ZYGOTE_INSIDE,
    ]
    argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--chdir", "/tmp"]
    if os.geteuid() == 0:
        argv += ["--cap-add", ",".join(TEMPLATE_CAPS)]
    else:
        argv += ["--unshare-user"]
    for k, v in SANDBOX_ENV.items():
        argv += ["--setenv", k, v]
    return [*argv, "--", python]


def _unshare_argv(python: str) -> list[str]:
    return [
        "unshare",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--ipc",
        "--uts",
        "--mount",
        "--mount-proc",
        python,
    ]


def launcher_argv(mode: str, script_fd: int = -1) -> list[str]:
    python = os.path.realpath(sys.executable)
    if mode == "bwrap":
        return _bwrap_argv(python, script_fd)
    if mode == "unshare":
        return _unshare_argv(python)
    return [python]


def _mode_available(mode: str) -> str | None:
    """None if ``mode`` can be tried here, else the reason it cannot."""
    if mode == "bwrap" and shutil.which("bwrap") is None:
        return "bwrap not found (Debian package 'bubblewrap')"
    if mode == "unshare":
        if shutil.which("unshare") is None:
            return "unshare not found (util-linux)"
        if os.geteuid() != 0:
            return "the unshare fallback needs root"
    return None


class Template:
    """A running zygote. Thread-safe: one request at a time on the control socket."""

    def __init__(self, mode: str, preimport: tuple[str, ...]):
        self.mode = mode
        self.private = mode != "none"
        self._lock = threading.Lock()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cfg = {
            "preimport": list(preimport),
            # Per-session uids need root outside a user namespace; so does the private /tmp mount.
            "per_session_uid": os.geteuid() == 0,
            "private_tmp": self.private and os.geteuid() == 0,
            "minimal_root": mode == "unshare",
            "visible": visible_paths(),
        }
        script = ZYGOTE_INSIDE if mode == "bwrap" else str(ZYGOTE)
        script_fd = os.open(ZYGOTE, os.O_RDONLY)
        argv = [*launcher_argv(mode, script_fd), "-I", "-B", script, str(child.fileno()), json.dumps(cfg)]
        env = dict(SANDBOX_ENV)
        if mode == "none":
            env["TMPDIR"] = os.environ.get("TMPDIR", "/tmp")
        try:
            self.proc = self._launch(argv, env, child, script_fd)
        finally:
            os.close(script_fd)
        child.close()
        self.sock = parent
        try:
            hello, _ = recv_msg(self.sock)
        except (EOFError, OSError):
            self.proc.wait(timeout=10)
            raise SandboxUnavailable(
                f"sandbox template ({mode}) failed to start (exit code {self.proc.returncode}): "
                + " | ".join(self.proc.stderr_tail)[-2000:]
            ) from None
        self.private_tmp = cfg["private_tmp"]
        self.per_session_uid = cfg["per_session_uid"]
        del hello

    @staticmethod
    def _launch(argv: list[str], env: dict, child: socket.socket, script_fd: int) -> subprocess.Popen:
        """Popen from a thread that lives as long as the template.

        bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that forked it
        exits; starting it from a short-lived worker thread (a pool's executor) would kill the template.
        """
        started: list = []
        ready = threading.Event()
        tail: collections.deque[str] = collections.deque(maxlen=20)

        def keeper() -> None:
            try:
                proc = subprocess.Popen(
                    argv,
                    pass_fds=[child.fileno(), script_fd],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
            except OSError as e:
                started.append(e)
                ready.set()
                return
            started.append(proc)
            ready.set()
            # Drain stderr (only crashes of the sandbox machinery land there) until the template exits.
            for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                tail.append(line)
                log.debug("sandbox template: %s", line)
            proc.wait()

        threading.Thread(target=keeper, name="sandbox-template", daemon=True).start()
        ready.wait()
        if isinstance(started[0], OSError):
            raise SandboxUnavailable(f"cannot start the sandbox launcher {argv[0]}: {started[0]}")
        started[0].stderr_tail = tail
        return started[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, msg: dict, fds: list[int] = ()) -> dict:
        with self._lock:
            send_msg(self.sock, msg, fds)
            reply, _ = recv_msg(self.sock)
        if "error" in reply:
            raise OSError(reply.get("errno", 5), f"sandbox template: {reply['error']}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


_templates: dict[LaunchSpec, Template] = {}
_templates_lock = threading.Lock()


def get_template(isolation: str, preimport: tuple[str, ...]) -> Template:
    """The shared template for these settings, started (or restarted, if it died) on demand."""
    spec = LaunchSpec(isolation, tuple(preimport))
    with _templates_lock:
        t = _templates.get(spec)
        if t is not None and t.alive():
            return t
        _templates[spec] = t = _start(isolation, tuple(preimport))
        return t


def _start(isolation: str, preimport: tuple[str, ...]) -> Template:
    if isolation == "none":
        msg = (
            "SANDBOX ISOLATION IS OFF (isolation='none'): model-written code runs with network access "
            "and a writable view of this machine; only rlimits and a cleared environment apply."
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        return Template("none", preimport)
    modes = ["bwrap", "unshare"] if isolation == "auto" else [isolation]
    reasons = []
    for mode in modes:
        reason = _mode_available(mode)
        if reason is None:
            try:
                return Template(mode, preimport)
            except SandboxUnavailable as e:
                reason = str(e)
        reasons.append(f"{mode}: {reason}")
    raise SandboxUnavailable(
        "no sandbox isolation is available, refusing to run model code ("
        + "; ".join(reasons)
        + "). Install bubblewrap, or pass isolation='none' to run unisolated on purpose."
    )


@atexit.register
def shutdown_templates() -> None:
    with _templates_lock:
        for t in _templates.values():
            t.close()
        _templates.clear()
