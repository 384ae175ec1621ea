"""One session is one world: hostile code that tries to outlive its block, reach another session, keep
IPC objects, gain a user namespace or read host details; and a pool that bounds what it opens.

Each case was a break found by a hostile probe (issue 28); each test fails on the sandbox before the fix.
Tests run as root with per-session uids (this project's machines and CI); they skip otherwise.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from dualdistill.sandbox import SandboxConfig, SandboxPool, Session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-session uids and namespaces need root")

CFG = SandboxConfig(timeout_s=5.0)
SANDBOX_UIDS = range(200_000, 2_000_000_000)  # _zygote._spawn draws session uids here


def uid_processes(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                status = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].strip()[0] not in "ZX":
                found.append(int(name))
    return found


def sandbox_processes() -> list[int]:
    """Host pids of processes owned by any sandbox uid."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = int(Path(f"/proc/{name}/status").read_text().split("Uid:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if uid in SANDBOX_UIDS:
                out.append(int(name))
    return out


def session_uid(s: Session) -> int:
    return s._proc["uid"]


# ----------------------------------------------------------------------------- nothing runs between blocks
SURVIVOR = """
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(36, 0, 0, 0, 0)  # child subreaper off: an orphan goes to pid 1, not the session
def survive():
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            for _ in range(300):
                time.sleep(0.01)
            print("SURVIVOR RAN", flush=True)
            open("/tmp/survivor", "w").write("ran")
        os._exit(0)
    os.waitpid(pid, 0)  # the grandchild is an orphan before the session stops
"""

ROUTES = {
    # a replaced stdout whose flush double-forks after the session's own kill(-1)
    "flush": SURVIVOR
    + """
class Out:
    def __init__(self, real):
        self.real = real
    def write(self, text):
        return self.real.write(text)
    def flush(self):
        survive()
        self.real.flush()
sys.stdout = Out(sys.stdout)
""",
    # a replaced os.kill starts a sibling with clone(CLONE_PARENT): the monitor becomes its parent
    "clone_parent": SURVIVOR
    + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
real_kill = os.kill
def kill(pid, sig):
    if sig == 19:  # SIGSTOP, the session stopping itself after the block
        pid2 = libc.syscall(56, 0x00008000 | 17, 0, 0, 0, 0)  # clone(CLONE_PARENT | SIGCHLD)
        if pid2 == 0:
            time.sleep(3)
            print("SURVIVOR RAN", flush=True)
            open("/tmp/survivor", "w").write("ran")
            os._exit(0)
    return real_kill(pid, sig)
os.kill = kill
""",
    # a profile hook forks when the session sends its status
    "setprofile": SURVIVOR
    + """
def hook(frame, event, arg):
    if event == "c_call" and getattr(arg, "__name__", "") == "sendall":
        sys.setprofile(None)
        survive()
sys.setprofile(hook)
""",
}


@pytest.mark.parametrize("route", ROUTES)
def test_no_process_of_the_session_outlives_its_block(route):
    if route == "clone_parent" and os.uname().machine != "x86_64":
        pytest.skip("the raw clone call is x86_64's")
    with Session(CFG) as s:
        assert s.run(ROUTES[route]).status in ("ok", "error")
        uid = session_uid(s)
        time.sleep(0.5)  # a survivor would be running now
        assert len(uid_processes(uid)) == 1, "a process of the session ran between blocks"  # the session
        time.sleep(3.2)
        r = s.run("import os\nprint(os.path.exists('/tmp/survivor'))")
        assert r.output.strip().endswith("False") and "SURVIVOR" not in r.output
        assert s.run("print(6 * 7)").output.endswith("42\n")  # the session stays usable


def test_the_session_cpu_budget_counts_every_process():
    cfg = SandboxConfig(timeout_s=5.0, cpu_time_s=1)
    burn = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.4:\n"
        "        pass\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('burned')"
    )
    with Session(cfg) as s:
        statuses = [s.run(burn).status for _ in range(5)]
    # Each child starts its own RLIMIT_CPU from zero; the session's cgroup counts them all together.
    assert statuses[:2] == ["ok", "ok"] and "timeout" in statuses, statuses


# ----------------------------------------------------------------------------- one session, one world
def test_ipc_objects_die_with_their_session():
    make = (
        "import ctypes, mmap, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "shm = libc.shmget(0x5EED, 64 << 20, 0o1666)\n"  # IPC_CREAT | 0666, 64 MiB of System V memory
        "msg = libc.msgget(0x5EED, 0o1666)\n"
        "fd = os.open('/dev/shm/dd-posix', os.O_CREAT | os.O_RDWR, 0o666)\n"
        "os.ftruncate(fd, 1 << 20)\n"
        "print(shm >= 0, msg >= 0)"
    )
    look = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.shmget(0x5EED, 0, 0), libc.msgget(0x5EED, 0), os.path.exists('/dev/shm/dd-posix'))"
    )
    with Session(CFG) as a:
        assert a.run(make).output.strip() == "True True"
        with Session(CFG) as b:  # a session open at the same time
            assert b.run(look).output.strip() == "-1 -1 False"
    with Session(CFG) as c:  # and one opened after
        assert c.run(look).output.strip() == "-1 -1 False"


def test_sessions_cannot_talk_over_the_network_or_unix_sockets():
    serve = (
        "import socket\n"
        "t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "try:\n    t.bind(('127.0.0.1', 47001)); t.listen(); print('tcp up')\n"
        "except OSError as e:\n    print('tcp', e.errno)\n"
        "u = socket.socket(socket.AF_UNIX)\nu.bind('\\0dd-abstract'); u.listen(); print('unix up')"
    )
    reach = (
        "import socket\nout = []\n"
        "for fam, addr in ((socket.AF_INET, ('127.0.0.1', 47001)), (socket.AF_UNIX, '\\0dd-abstract')):\n"
        "    s = socket.socket(fam); s.settimeout(0.5)\n"
        "    try:\n        s.connect(addr); out.append('reached')\n"
        "    except OSError:\n        out.append('no')\n"
        "print(out)"
    )
    with Session(CFG) as a, Session(CFG) as b:
        a.run(serve)
        assert b.run(reach).output.strip() == "['no', 'no']"
        # Each session has its own network namespace: a loopback only (netlink, which if_nameindex uses,
        # is refused by the seccomp filter, so the interfaces are read from /proc).
        devs = "print([l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]])"
        assert a.run(devs).output.strip() == "['lo']"


def test_no_user_namespaces():
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.unshare(0x10000000)\n"
        "print(r, ctypes.get_errno())\n"
        "import subprocess\n"
        "p = subprocess.run(['unshare', '-U', '-r', 'id'], capture_output=True, text=True)\n"
        "print(p.returncode != 0)"
    )
    with Session(CFG) as s:
        out = s.run(code).output.split()
        assert out == ["-1", "1", "True"]  # EPERM, and unshare(1) fails too
        # Threads and subprocesses still work (clone3 falls back to clone).
        assert s.run("import threading, subprocess\nt = threading.Thread(target=print, args=('t',))\n"
                     "t.start(); t.join()\nprint(subprocess.run(['echo', 'p'], capture_output=True, text=True).stdout)"
                     ).output.split() == ["t", "p"]  # fmt: skip


def test_no_kernel_keyrings_carry_data_between_sessions():
    """add_key, request_key and keyctl are refused (EPERM), as in Docker's default profile: a uid's
    keyrings outlive its session, so a later session could read what an earlier one stored."""
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "nr = {'x86_64': (248, 249, 250), 'aarch64': (217, 218, 219)}[__import__('os').uname().machine]\n"
        "out = []\n"
        "out.append((libc.syscall(nr[0], b'user', b'dd-secret', b'leak', 4, -3), ctypes.get_errno()))\n"  # add_key
        "out.append((libc.syscall(nr[1], b'user', b'dd-secret', None, 0), ctypes.get_errno()))\n"  # request_key
        "out.append((libc.syscall(nr[2], 0, -3, 0, 0), ctypes.get_errno()))\n"  # keyctl(GET_KEYRING_ID)
        "print(out)"
    )
    with Session(CFG) as s:
        assert s.run(code).output.strip() == "[(-1, 1), (-1, 1), (-1, 1)]"


def test_only_unix_and_inet_sockets_can_be_made():
    code = (
        "import socket\nout = []\n"
        "for fam in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET, 40):\n"
        "    try:\n        socket.socket(fam, socket.SOCK_DGRAM).close(); out.append('ok')\n"
        "    except OSError as e:\n        out.append(e.errno)\n"
        "try:\n    socket.socketpair(socket.AF_UNIX).__len__(); out.append('pair')\n"
        "except OSError as e:\n    out.append(e.errno)\n"
        "print(out)"
    )
    with Session(CFG) as s:
        assert s.run(code).output.strip() == "['ok', 'ok', 'ok', 97, 97, 97, 'pair']"  # 97: EAFNOSUPPORT


def test_a_closed_session_raises_and_a_pool_never_exceeds_max_open():
    from dualdistill.sandbox import SessionClosed

    s = Session(CFG)
    s.close()
    with pytest.raises(SessionClosed, match="closed"):
        s.run("print(1)")
    with pytest.raises(SessionClosed):
        s.reset()

    async def go():
        pool = SandboxPool(CFG, max_concurrency=2, max_open=3)
        handed = [await pool.open() for _ in range(3)]
        for a in handed:
            await a.close()
        errors = 0
        for a in handed:  # a caller that keeps using sessions it closed
            try:
                await a.run("print(1)")
            except SessionClosed:
                errors += 1
        more = [await pool.open() for _ in range(3)]
        live = sum(a.session._proc is not None for a in [*handed, *more])
        await pool.close()
        return errors, live, sum(a.session._proc is not None for a in [*handed, *more])

    assert asyncio.run(go()) == (3, 3, 0)


def test_less_host_detail_is_visible():
    host_pid = str(os.getpid())
    checkout = str(Path(__file__).resolve().parents[1])
    with Session(CFG) as a, Session(CFG) as b:
        b.run("import time")
        out = a.run(
            "import os\n"
            "mine = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "print(mine == [str(os.getpid())], os.path.exists('/proc/1/cmdline'))\n"
            "print(open('/proc/self/mountinfo').read())\n"
            "print(open('/proc/self/cgroup').read())"
        ).output
        # Only its own process: not the other session's, not pid 1 (the launcher).
        assert out.splitlines()[0] == "True False"
        assert checkout not in out
        assert f"-{host_pid}-" not in out


# ----------------------------------------------------------------------------- a pool that bounds what it opens
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_pool_holds_at_most_max_open_sessions_and_thousands_pass_through():
    async def go():
        pool = SandboxPool(SandboxConfig(timeout_s=5.0), max_concurrency=4, max_open=8)
        high = 0

        async def one(i: int) -> str:
            nonlocal high
            async with pool.session() as s:
                high = max(high, len(pool._open))
                return (await s.run(f"print({i} * 2)")).output

        try:
            outputs = await asyncio.gather(*(one(i) for i in range(2100)))
        finally:
            await pool.close()
        return outputs, high

    Session(SandboxConfig(timeout_s=5.0)).close()  # the shared template is up before counting
    before, alive = open_fds(), set(sandbox_processes())  # other tests' sessions may still be open
    outputs, high = asyncio.run(go())
    assert outputs[7] == "14\n" and len(outputs) == 2100
    assert high <= 8
    assert open_fds() <= before + 2  # nothing per session is left open
    assert set(sandbox_processes()) <= alive


HOSTILE = (
    "import ctypes, os, subprocess, time\n"
    "libc = ctypes.CDLL(None)\n"
    "libc.shmget({i}, 1 << 20, 0o1666)\n"
    "open(f'/tmp/junk-{i}', 'w').write('x' * 1000)\n"
    "subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
    "if os.fork() == 0:\n    os.setsid(); time.sleep(30)\n"
    "print('done')"
)


@pytest.mark.slow
def test_a_thousand_hostile_sessions_leave_nothing_behind():
    shm_before = set(os.listdir("/dev/shm"))
    tmp_before = set(os.listdir("/tmp"))

    async def go():
        async with SandboxPool(SandboxConfig(timeout_s=5.0), max_concurrency=8, max_open=32) as pool:

            async def one(i: int) -> str:
                async with pool.session() as s:
                    return (await s.run(HOSTILE.format(i=i))).output

            return await asyncio.gather(*(one(i) for i in range(1000)))

    Session(SandboxConfig(timeout_s=5.0)).close()
    before, alive = open_fds(), set(sandbox_processes())
    outputs = asyncio.run(go())
    assert sum(o.strip().endswith("done") for o in outputs) == 1000
    time.sleep(0.2)
    assert set(sandbox_processes()) <= alive
    assert set(os.listdir("/dev/shm")) == shm_before
    assert {p for p in os.listdir("/tmp") if p.startswith("junk-")} == set()
    assert set(os.listdir("/tmp")) - tmp_before <= {p for p in os.listdir("/tmp") if p.startswith("pytest")}
    assert open_fds() <= before + 2
