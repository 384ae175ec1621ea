"""The template ("zygote") process that runs INSIDE the isolation; started by ``template.py``.

This file is run as a standalone script (``python -I -B _zygote.py FD CONFIG_JSON``) and imports nothing
from dualdistill, so the sandbox never loads the parent's package. It pre-imports numpy/sympy once and
then serves one control socket (fd FD) from the parent:

- ``spawn`` (with passed fds: the session socket, the output pipe's write end, and the ``cgroup.procs``
  files of the session's control groups, if any): fork a *monitor*, which forks the session process.
  The monitor keeps the host's socket and runs the blocks one at a time (see ``_monitor``). The session
  process gets its own uid (when we are root: a fresh uid per session, so sessions cannot signal each
  other and RLIMIT_NPROC counts only that session), its cgroups, and (as root) its own mount, IPC and
  network namespaces: a private scratch tmpfs, a /proc that shows only its own uid's processes, no IPC
  object of any other session, and a loopback that is down. Then rlimits, a seccomp filter that refuses
  new user namespaces, and code blocks in persistent globals.
- ``kill``: kill every process of a session (a helper forked with the session's uid calls ``kill(-1)``
  until nothing is left, which also catches grandchildren that left the process group), reap the
  session child and return its wait status.

Messages are 4-byte big-endian length + JSON, both on the control socket and on session sockets.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import io
import itertools
import json
import linecache
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x40000000, 0x10000000
MS_NOEXEC = 8
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
STATUS_BYTES = {b"o": "ok", b"e": "error", b"m": "memory"}
_libc = ctypes.CDLL(None, use_errno=True)


def send_msg(sock: socket.socket, obj: dict, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    payload = struct.pack(">I", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def recv_msg(sock: socket.socket) -> tuple[dict, list[int]]:
    # The header arrives with any passed fds (they ride on the first byte of the message).
    header, fds, _, _ = socket.recv_fds(sock, 4, 8)
    if not header:
        raise EOFError
    header += _recv_exact(sock, 4 - len(header)) if len(header) < 4 else b""
    (n,) = struct.unpack(">I", header)
    return json.loads(_recv_exact(sock, n)), fds


# ---------------------------------------------------------------- session child (runs model code)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _setup_child(cfg: dict, spec: dict, sock_fd: int, out_fd: int, cgroup_fds: list[int]) -> None:
    """Everything between fork and the first block: order matters (mounts and rlimits before setuid)."""
    for fd in cgroup_fds:  # join the session's control groups ("0": this process) while still root
        os.write(fd, b"0")
        os.close(fd)
    uid = spec["uid"]
    if cfg["private_tmp"]:
        # One session, one world: its own mount namespace with a size-limited tmpfs (wiped by the kernel
        # at exit), its own IPC namespace (shared memory, queues and semaphores die with the session)
        # and its own network namespace (only a loopback, down: no session can reach another).
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET), "unshare(mount, ipc, net)")
        opts = f"size={spec['scratch_mb']}m,mode=0700,uid={uid},gid={uid}".encode()
        _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount /tmp")
        if os.path.isdir("/dev/shm"):  # POSIX shared memory: files there, so a tmpfs of its own
            _check(_libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount /dev/shm")
        # A /proc of this PID namespace that shows each uid only its own processes: no other session's
        # command lines, and not pid 1's (the launcher's).
        _check(
            _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=2"),
            "mount /proc",
        )
        scratch = "/tmp"
    else:
        scratch = spec["scratch"]
        if uid is not None:
            os.chown(scratch, uid, uid)
    os.chdir(scratch)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.closerange(3, sock_fd)
    os.closerange(sock_fd + 1, 65536)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    limits = spec["limits"]
    for name, value in limits.items():
        soft, hard = value if isinstance(value, list) else (value, value)
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to a fresh uid: drops every capability too
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # cleared by setuid, so set it after
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the model's code come back to us
    forbid_user_namespaces()
    # Write-through text streams so output printed before a timeout kill still reaches the parent.
    sys.stdout = io.TextIOWrapper(
        os.fdopen(1, "wb", 0), encoding="utf-8", errors="replace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        os.fdopen(2, "wb", 0), encoding="utf-8", errors="replace", write_through=True
    )
    sys.stdin = io.TextIOWrapper(os.fdopen(0, "rb"), encoding="utf-8")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    sys.argv = [""]


# Syscall numbers by machine; other machines get no filter (documented).
_SECCOMP_ARCH = {
    "x86_64": {"arch": 0xC000003E, "unshare": 272, "clone": 56, "clone3": 435, "setns": 308,
               "add_key": 248, "request_key": 249, "keyctl": 250, "socket": 41, "socketpair": 53},
    "aarch64": {"arch": 0xC00000B7, "unshare": 97, "clone": 220, "clone3": 435, "setns": 268,
                "add_key": 217, "request_key": 218, "keyctl": 219, "socket": 198, "socketpair": 199},
}  # fmt: skip
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _assemble(program: list[tuple]) -> bytes:
    """Classic BPF from ``(label, op, k, jump_true, jump_false)`` rows; jumps name later labels."""
    codes = {"ld": 0x20, "jeq": 0x15, "jge": 0x35, "jset": 0x45, "ret": 0x06}
    where = {row[0]: i for i, row in enumerate(program) if row[0]}

    def offset(target, i: int) -> int:
        return 0 if target is None else where[target] - i - 1

    return b"".join(
        struct.pack("HBBI", codes[op], offset(jt, i), offset(jf, i), k)
        for i, (_, op, k, jt, jf) in enumerate(program)
    )


def forbid_user_namespaces() -> bool:
    """A seccomp filter, inherited by every child and never removable:

    - ``unshare`` and ``clone`` with CLONE_NEWUSER and every ``setns`` fail with EPERM; ``clone3`` (whose
      flags a filter cannot read) and the 32-bit ABIs fail with ENOSYS, so the C library falls back to
      ``clone``. A user namespace would give the code full capabilities inside it, the kernel surface
      most container escapes go through.
    - ``add_key``, ``request_key`` and ``keyctl`` fail with EPERM, as in Docker's default profile: the
      kernel keyrings are shared by uid and outlive a session, so they would carry data between sessions.
    - ``socket`` and ``socketpair`` of any family but AF_UNIX, AF_INET and AF_INET6 fail with
      EAFNOSUPPORT (netlink, packet, vsock and the rest are kernel surface no model code needs).

    Returns False (no filter) on other machines."""
    machine = os.uname().machine  # no import: after the uid switch the session may not read the stdlib
    if machine not in _SECCOMP_ARCH:
        return False
    n = _SECCOMP_ARCH[machine]
    err = 0x00050000  # SECCOMP_RET_ERRNO
    allow, eperm, enosys, eafnosupport = (
        0x7FFF0000,
        err | errno.EPERM,
        err | errno.ENOSYS,
        err | errno.EAFNOSUPPORT,
    )
    prog = _assemble([
        (None, "ld", 4, None, None),  # arch
        (None, "jeq", n["arch"], "native", "enosys"),  # a compat ABI (int 0x80): ENOSYS
        ("native", "ld", 0, None, None),  # syscall number
        (None, "jge", 0x40000000, "enosys", None),  # x32 numbers
        (None, "jeq", n["unshare"], "flags", None),
        (None, "jeq", n["clone"], "flags", None),
        (None, "jeq", n["clone3"], "enosys", None),
        (None, "jeq", n["setns"], "eperm", None),
        (None, "jeq", n["add_key"], "eperm", None),
        (None, "jeq", n["request_key"], "eperm", None),
        (None, "jeq", n["keyctl"], "eperm", None),
        (None, "jeq", n["socket"], "family", None),
        (None, "jeq", n["socketpair"], "family", "allow"),
        ("flags", "ld", 16, None, None),  # args[0], its low 32 bits (the clone/unshare flags)
        (None, "jset", CLONE_NEWUSER, "eperm", "allow"),
        ("family", "ld", 16, None, None),  # args[0]: the socket's address family
        (None, "jeq", AF_UNIX, "allow", None),
        (None, "jeq", AF_INET, "allow", None),
        (None, "jeq", AF_INET6, "allow", "eafnosupport"),
        ("eperm", "ret", eperm, None, None),
        ("enosys", "ret", enosys, None, None),
        ("eafnosupport", "ret", eafnosupport, None, None),
        ("allow", "ret", allow, None, None),
    ])  # fmt: skip
    buf = ctypes.create_string_buffer(prog)
    fprog = _SockFprog(len(prog) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
    return True


def _format_exception(exc: BaseException, prefix: str) -> str:
    """A traceback without our own frames: only the model's cells and the libraries it called."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(prefix):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _run_block(code: str, cell: int, repl: bool, env: dict) -> str:
    """Execute one block in ``env``; returns ``ok``, ``error`` or ``memory``."""
    filename = f"<cell {cell}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        if repl and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), env)
        if last is not None:
            value = eval(compile(last, filename, "eval"), env)
            if value is not None:
                print(repr(value))
        return "ok"
    except SystemExit as e:
        if e.code in (None, 0):
            return "ok"
        sys.stderr.write(_format_exception(e, "<cell "))
        return "error"
    except BaseException as e:  # the model's own error, reported like a Jupyter kernel would
        try:
            sys.stderr.write(_format_exception(e, "<cell "))
        except BaseException:
            sys.stderr.write(f"{type(e).__name__}\n")
        return "memory" if isinstance(e, MemoryError) else "error"


def _kill_others() -> None:
    """kill(-1): every process we may signal (same uid), except ourselves and the namespace's init.

    Its return value cannot tell whether anything was hit (Linux counts processes it may not signal),
    so callers check ``_live_pids`` instead. A process caught in the middle of fork() has its fork
    cancelled by the pending SIGKILL, so a fork bomb cannot outrun this.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def _live_pids(uid: int) -> list[int]:
    """Processes of ``uid`` in this PID namespace that are not yet zombies. A /proc/PID directory is
    owned by its process's uid, so only the matching ones are opened (this runs after every block)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _reap_leftovers() -> None:
    """No process outlives its block. The session is a child subreaper, so every descendant (also one
    that called setsid) stays our child; kill them all (same uid) and reap until none is left."""
    for _ in range(100_000):
        _kill_others()
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _reap_zombies() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def session_main(chan: socket.socket, uid_isolated: bool) -> None:
    """Run blocks from the monitor. After each: one status byte, then SIGSTOP. The monitor, not this
    process, then tells the host that the block ended, so nothing here (which the model's code can
    reach) can end a block while code keeps running: a stopped process runs nothing."""
    env: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    cell = 0
    me = os.getpid()
    while True:
        _reap_zombies()  # processes the monitor killed after the last block
        try:
            msg, _ = recv_msg(chan)
        except (EOFError, OSError):
            os._exit(0)
        cell += 1
        kind = _run_block(msg["code"], cell, msg["repl"], env)
        if os.getpid() != me:
            # A child forked by the model's code finished the block: it must not answer as the session.
            os._exit(0)
        if uid_isolated:
            _reap_leftovers()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        chan.sendall(f"{kind[0]}{msg['seq']}\n".encode())
        os.kill(me, signal.SIGSTOP)


# ---------------------------------------------------------------- the monitor (one per session)


def _descendants(root: int) -> list[int]:
    """Live (non-zombie) processes below ``root`` in this PID namespace."""
    children: dict[int, list[int]] = {}
    state: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state[int(name)] = fields[0].decode()
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return [p for p in found if state.get(p, "Z") not in ("Z", "X")]


def _freeze_block(session: int, uid: int | None) -> None:
    """The session is stopped; kill every other process of its uid (with per-session uids), else
    everything below it. Whatever the code did to itself in the session (a hooked ``os.kill``, a
    subreaper turned off, a sibling made with CLONE_PARENT), nothing of its uid runs between blocks.
    Processes the monitor got as children (CLONE_PARENT) are reaped here; the session reaps its own."""
    for attempt in range(1000):
        left = [p for p in _live_pids(uid) if p != session] if uid is not None else _descendants(session)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:  # never the session: it is stopped, not exited
                pass
        time.sleep(0.0005 * min(attempt, 20))


def _block_status(chan: socket.socket, pending: bytearray, seq: int) -> str | None:
    """The status the session sent for block ``seq`` ("o17\n"), or None when it has not: then the
    stop was not the end of that block (the model's code stopped itself) and the block goes on."""
    with contextlib.suppress(BlockingIOError, OSError):
        while data := chan.recv(65536, socket.MSG_DONTWAIT):
            pending += data
            del pending[: max(0, len(pending) - 4096)]  # junk the model's code sends is bounded
    for m in re.finditer(rb"([oem])(\d+)\n", bytes(pending)):
        if int(m.group(2)) == seq:
            pending.clear()
            return STATUS_BYTES[m.group(1)]
    return None


def _end_like(status: int) -> None:
    """Exit the way the session process did, so the zygote reports its signal or exit code."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


def _monitor(cfg: dict, spec: dict, sock_fd: int, out_fd: int, cgroup_fds: list[int]) -> None:
    """Own the host's session socket; fork the session process and run its blocks one at a time.

    The session holds neither the host socket nor the block's nonce. A block has ended when the
    session has stopped itself (all its threads frozen) and everything it forked is dead; only then
    does the nonce go on the output pipe and the reply to the host.
    """
    os.setsid()  # the session's process group: the zygote's killpg reaches the monitor and the session
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # model code of the same uid cannot ptrace or read us
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    session = os.fork()
    if session == 0:
        try:
            mine.close()
            os.close(sock_fd)
            _setup_child(cfg, spec, theirs.fileno(), out_fd, cgroup_fds)
            session_main(theirs, spec["uid"] is not None)
        except BaseException:
            traceback.print_exc()
        os._exit(70)
    theirs.close()
    for fd in cgroup_fds:
        os.close(fd)
    host = socket.socket(fileno=sock_fd)
    pending = bytearray()
    for seq in itertools.count():
        try:
            msg, _ = recv_msg(host)
        except (EOFError, OSError):
            os.kill(session, signal.SIGKILL)
            os._exit(0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(session, signal.SIGCONT)  # before sending: a stopped session cannot drain a big block
        with contextlib.suppress(OSError):
            send_msg(mine, {"code": msg["code"], "repl": msg["repl"], "seq": seq})
        while True:  # the host's timeout bounds this loop: it kills us
            _, status = os.waitpid(session, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                _end_like(status)
            kind = _block_status(mine, pending, seq)
            if kind is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(session, signal.SIGCONT)
        _freeze_block(session, spec["uid"])
        # The nonce marks the end of this block's output on the pipe (the reply travels on the socket).
        os.write(out_fd, msg["nonce"].encode())
        send_msg(host, {"kind": kind})


# ---------------------------------------------------------------- the zygote itself


def _kill_uid(uid: int) -> None:
    """Kill every process owned by ``uid``: a forked helper takes the uid and calls kill(-1)."""
    for attempt in range(100):
        pid = os.fork()
        if pid == 0:
            try:
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                for _ in range(3):
                    _kill_others()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if not _live_pids(uid):
            return
        time.sleep(0.001 * attempt)  # SIGKILLed processes take a moment to become zombies


def _spawn(cfg: dict, msg: dict, fds: list[int], ctl: socket.socket, used: set[int]) -> dict:
    sock_fd, out_fd, *cgroup_fds = fds
    uid = None
    if cfg["per_session_uid"]:
        uid = random.randrange(200_000, 2_000_000_000)
        while uid in used:
            uid = random.randrange(200_000, 2_000_000_000)
        used.add(uid)
    scratch = None if cfg["private_tmp"] else tempfile.mkdtemp(prefix="dd-sandbox-")
    spec = {**msg, "uid": uid, "scratch": scratch}
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            _monitor(cfg, spec, sock_fd, out_fd, cgroup_fds)
        except BaseException:
            traceback.print_exc()
        os._exit(70)
    for fd in (sock_fd, out_fd, *cgroup_fds):
        os.close(fd)
    return {"pid": pid, "uid": uid, "scratch": scratch}


def _kill(msg: dict, used: set[int]) -> dict:
    pid, uid = msg["pid"], msg["uid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)  # reap first: kill(-1) would keep hitting the zombie
    except ChildProcessError:
        status = None
    if uid is not None:
        _kill_uid(uid)
        used.discard(uid)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    if msg.get("scratch"):
        shutil.rmtree(msg["scratch"], ignore_errors=True)
    reply: dict = {"status": status}
    if status is not None:
        reply["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        reply["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return reply


def _enter_minimal_root(visible: list[list[str]]) -> None:
    """For the ``unshare`` launcher (bwrap does this itself): a new root on a private tmpfs holding only
    ``visible`` (read-only binds and merged-/usr symlinks), /dev, this PID namespace's /proc and an
    empty /tmp; then chroot into it. The checkout, home directories and the rest of the host are gone."""
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755"), "mount /tmp")
    root = "/tmp/root"
    os.mkdir(root, 0o755)
    for kind, p in visible:
        target = root + p
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if kind == "symlink":
            os.symlink(os.readlink(p), target)
            continue
        if os.path.isdir(p):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            open(target, "w").close()
        _check(_libc.mount(p.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {p}")
        _libc.mount(None, target.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    for p in ("/dev", "/proc"):
        os.mkdir(root + p, 0o755)
        _check(_libc.mount(p.encode(), (root + p).encode(), None, MS_BIND | MS_REC, None), f"bind {p}")
    os.mkdir(root + "/tmp", 0o1777)
    os.chroot(root)
    os.chdir("/")
    _libc.mount(None, b"/", None, MS_REMOUNT | MS_RDONLY, None)  # the new root's own tmpfs


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    cfg = json.loads(sys.argv[2])
    if cfg["minimal_root"]:
        _enter_minimal_root(cfg["visible"])
    for name in cfg["preimport"]:
        __import__(name)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    used: set[int] = set()
    send_msg(ctl, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            msg, fds = recv_msg(ctl)
        except EOFError:
            return
        try:
            if msg["op"] == "spawn":
                reply = _spawn(cfg, msg, fds, ctl, used)
            elif msg["op"] == "kill":
                reply = _kill(msg, used)
            else:
                reply = {"error": f"unknown op {msg['op']!r}"}
        except OSError as e:
            reply = {"error": f"{type(e).__name__}: {e}", "errno": e.errno or errno.EIO}
        send_msg(ctl, reply)
        # Reap sessions that exited on their own; their status was already reported or is not needed.


if __name__ == "__main__":
    main()
