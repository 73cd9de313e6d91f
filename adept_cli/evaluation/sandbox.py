"""Run an untrusted Python program isolated from the machine (Linux namespaces).

Each program runs in a fresh `python -I` inside new mount, PID, network, IPC and UTS namespaces (and a user
namespace unless adept runs as root). It sees only the interpreter and the system libraries, read-only,
its own folder, read-only, and a writable folder of WORK_MB in memory (its working directory and TMPDIR,
so it cannot fill the disk): no home folder, no data, no project, no other process (it is PID 1 of its
namespace: no reaper of the sandbox tool's own runs beside it); no network (not even the host's
loopback); an empty environment; no capabilities, so it cannot remount what it sees writable. A seccomp
filter (seccomp.py), set before the program's first line and inherited by all it starts, refuses what
would widen the sandbox or escape its memory bound: new namespaces (in a user namespace of its own it
would hold every capability again), ptrace and its kin, mounts, memfd and System V shared memory, Unix
sockets, and the kernel's own facilities.
Limits on CPU time, address space, file size, open files and processes are set by the program's own
first lines (see execution.py). When adept runs as root, the program runs as `nobody`: a root program,
capabilities or not, could still write the kernel's root-owned settings under /proc/sys.

`bubblewrap` (bwrap) builds the sandbox where it is installed, else `unshare` (with `setpriv`) from
util-linux; either is first checked with a probe program that must fail to write outside its working
folder, not see a file beside its folder or another process, hold no capabilities, find the filter in
force and, under root, be nobody. Where neither works (macOS, namespaces disabled), programs run only
with an explicit `allow_unsafe_exec`, with a warning, never silently.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import AdeptError
from . import memory_group, seccomp

NOBODY = 65534
INSIDE = "/sandbox"  # where the program finds its folder (read-only) and, below it, its writable space
WORK_MB = 64  # the writable space (a tmpfs): generated code cannot fill this machine's disk
DEVICES = ("null", "zero", "full", "random", "urandom")  # all of /dev it gets (no /dev/shm to fill memory)
logger = logging.getLogger("adept.execution")


class ExecutionError(AdeptError, RuntimeError):
    """Generated code cannot be executed safely here; the message says what to install or set."""


@functools.cache
def visible_paths() -> tuple[tuple[str, str, str], ...]:
    """What a sandboxed program sees of this machine, read-only: the system's programs and libraries and
    this interpreter's installation (its virtual environment included), as ("bind", source, path) or
    ("link", target, path) for a path that is a symbolic link to another of them (/bin -> usr/bin)."""
    wanted = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", sys.prefix, sys.exec_prefix]
    wanted += [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    paths = sorted({os.path.abspath(p) for p in wanted if os.path.lexists(p)}, key=lambda p: (p.count("/"), p))
    bound: list[str] = []
    view: list[tuple[str, str, str]] = []
    # Real folders first, then links: a link into a bound folder stays a link.
    for path in sorted(paths, key=os.path.islink):
        if any(_inside(path, other) for other in bound):
            continue
        real = os.path.realpath(path)
        if os.path.islink(path) and any(_inside(real, other) for other in bound):
            view.append(("link", os.readlink(path), path))
        elif os.path.isdir(real):
            view.append(("bind", real, path))
            bound.append(path)
    return tuple(view)


def _become(user: int | None) -> list[str]:
    """setpriv: drop every capability (and, given a user, become that user and group)."""
    who = ["--reuid", str(user), "--regid", str(user), "--clear-groups"] if user is not None else []
    return [shutil.which("setpriv") or "setpriv", *who, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0  # Windows has no user ids (nor a sandbox)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _folders_above(paths: list[str]) -> list[str]:
    """Every folder above `paths` (not "/"), parents first, so each can be made world-readable."""
    folders: list[str] = []
    for path in paths:
        parts = Path(path).parts[1:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:depth])
            if folder not in folders:
                folders.append(folder)
    return folders


@dataclass(frozen=True)
class Sandbox:
    """How programs are isolated: `kind` is bubblewrap, unshare or none (unsafe, allowed explicitly);
    `as_nobody` when adept runs as root and the program must not. Under root the namespaces are made as
    root and the program then becomes nobody; or, with `nobody_first` (where root may not make them: a
    container without CAP_SYS_ADMIN), adept becomes nobody first and makes them as any user does, in a
    user namespace that maps the program to nobody here."""

    kind: Literal["bubblewrap", "unshare", "none"]
    as_nobody: bool = False
    nobody_first: bool = False

    def describe(self) -> str:
        if self.kind == "none":
            return "NOT isolated (allow_unsafe_exec): generated code can read and change this machine"
        who = ", as nobody" if self.as_nobody else ""
        memory = "for the whole program, in a cgroup" if memory_group.available() else "per process: no cgroup here"
        return (
            f"{self.kind} sandbox{who}: no network, sees only the Python installation (read-only) and a private "
            f"{WORK_MB} MiB working folder, own PID namespace, no capabilities, no user namespaces, empty "
            f"environment, limits on CPU, memory ({memory}), file size, open files and processes"
        )

    def command(self, scratch: Path) -> list[str]:
        """The command that runs `program.py` of `scratch` in this sandbox. Inside, `scratch` is INSIDE,
        read-only, and the program works in INSIDE/work, a tmpfs of WORK_MB."""
        if self.kind == "none":
            return [sys.executable, "-I", "-B", "program.py"]
        program = [*self._drop(), sys.executable, "-I", "-B", f"{INSIDE}/program.py"]
        sandboxed = self._bubblewrap(scratch, program) if self.kind == "bubblewrap" else self._unshare(scratch, program)
        return [*_become(NOBODY), *sandboxed] if self._in_user_namespace and self.as_nobody else sandboxed

    @property
    def _in_user_namespace(self) -> bool:
        """Whether the sandbox is a user namespace (always, but for root making it as root)."""
        return self.nobody_first or not self.as_nobody

    def _drop(self) -> list[str]:
        """The program must end with no capabilities (else it could remount its view writable) and, under
        root making the namespaces, as nobody. bwrap run by a user drops every capability itself;
        otherwise setpriv does."""
        if self.kind == "bubblewrap" and self._in_user_namespace:
            return []
        return _become(NOBODY) if not self._in_user_namespace else _become(None)

    def prepare(self, scratch: Path) -> None:
        """unshare's setup mounts its root over scratch/.root: made here, nobody's when nobody makes it."""
        if self.kind == "unshare":
            (scratch / ".root").mkdir(exist_ok=True)
            if self.as_nobody and self.nobody_first:
                os.chown(scratch / ".root", NOBODY, NOBODY)

    def _bubblewrap(self, scratch: Path, program: list[str]) -> list[str]:
        # Run by root, bwrap makes no user namespace (it would map the program to root); setpriv drops.
        # Run by a user (or by nobody, for root), it makes one and maps the program to that user.
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        layout: list[str] = []
        for folder in _folders_above([path for _, _, path in visible_paths()]):
            layout += ["--dir", folder]
        for kind, source, path in visible_paths():
            layout += ["--ro-bind", source, path] if kind == "bind" else ["--symlink", source, path]
        work = f"{INSIDE}/work"
        return [
            "bwrap",
            *(["--unshare-all", "--unshare-user"] if self._in_user_namespace else namespaces),
            "--die-with-parent",
            "--new-session",
            # no reaper of bwrap's own as PID 1: it runs without the program's filter, and a program that
            # could reach it (ptrace, /proc/1/mem, when both are nobody) could make namespaces through it
            "--as-pid-1",
            *layout,
            "--proc", "/proc",
            "--dir", "/dev",
            *[word for device in DEVICES for word in ("--dev-bind", f"/dev/{device}", f"/dev/{device}")],
            "--ro-bind", str(scratch), INSIDE,
            "--perms", "1777", "--size", str(WORK_MB * 2**20), "--tmpfs", work,
            "--remount-ro", "/",
            "--clearenv",
            "--setenv", "TMPDIR", work,
            "--chdir", work,
            *program,
        ]  # fmt: skip

    def _unshare(self, scratch: Path, program: list[str]) -> list[str]:
        layout = [word for folder in _folders_above([p for _, _, p in visible_paths()]) for word in ("dir", folder)]
        for step in visible_paths():
            layout += step
        return [
            "unshare",
            *(["--user", "--map-root-user"] if self._in_user_namespace else []),
            "--mount",
            "--propagation", "private",
            "--net",
            "--ipc",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh", "-c", _UNSHARE_SCRIPT, "sandbox", str(scratch), str(WORK_MB), " ".join(DEVICES), *layout, "--",
            shutil.which("sh") or "/bin/sh", "-c", 'cd "$TMPDIR" && exec "$@"', "sandbox", *program,
        ]  # fmt: skip


# Inside the new namespaces: an empty root (tmpfs) holding the visible paths, a few devices and the
# scratch folder at /sandbox, all made read-only, then the writable /sandbox/work (a small tmpfs) and a
# fresh /proc; chroot into it with an empty environment and run the rest of the arguments (the capability
# drop, then the program). Any failed step aborts.
_UNSHARE_SCRIPT = """
set -eu
PATH="/usr/sbin:/sbin:/usr/bin:/bin:$PATH"
umask 022
scratch=$1; work_mb=$2; devices=$3; shift 3
root="$scratch/.root"
mount -t tmpfs -o mode=755 adept-sandbox "$root"
while [ "$1" != -- ]; do
  case $1 in
    dir) mkdir -p "$root$2"; shift 2;;
    link) ln -s "$2" "$root$3"; shift 3;;
    bind) mkdir -p "$root$3"; mount --rbind "$2" "$root$3"; shift 3;;
    *) echo "unknown layout step $1" >&2; exit 1;;
  esac
done
shift
mkdir -p "$root/dev" "$root/proc" "$root/sandbox"
for device in $devices; do
  touch "$root/dev/$device"
  mount --bind "/dev/$device" "$root/dev/$device"
done
mount --bind "$scratch" "$root/sandbox"
awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 " " $6 }' /proc/self/mountinfo |
while read -r point options; do
  flags=ro
  for flag in nosuid nodev noexec; do
    case ",$options," in *",$flag,"*) flags="$flags,$flag";; esac
  done
  mount -o "remount,bind,$flags" "$point"
done
mount -t tmpfs -o "size=${work_mb}m,mode=1777" adept-work "$root/sandbox/work"
mount -t proc proc "$root/proc"
cd "$root"
exec env -i TMPDIR=/sandbox/work "$(command -v chroot)" "$root" "$@"
"""


@functools.cache
def detect_sandbox() -> Sandbox | None:
    """The first isolation that works here, checked by running a probe in it (cached per process)."""
    if not sys.platform.startswith("linux"):
        return None
    as_nobody = _is_root()
    # Under root: first the namespaces made as root; then (no CAP_SYS_ADMIN, as in a default container)
    # made by nobody, which works where nobody can read this Python installation.
    for nobody_first in (False, True) if as_nobody else (False,):
        for kind, tool in (("bubblewrap", "bwrap"), ("unshare", "unshare")):
            if shutil.which(tool) is None:
                continue
            sandbox = Sandbox(kind, as_nobody, nobody_first)
            if probe(sandbox):
                return sandbox
    return None


_PROBE = """\
import os, socket
os.makedirs("inside", exist_ok=True)
open("inside/ok", "w").write("ok")
if open("inside/ok").read() != "ok" or os.getcwd() != os.environ.get("TMPDIR"):
    raise SystemExit(3)
for path in {outside!r}:
    try:
        open(path, "w").write("escaped")
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError:
    pass
if os.getpid() > 10 or "PATH" in os.environ or "HOME" in os.environ or not os.environ.get("TMPDIR"):
    raise SystemExit(4)
if os.path.exists({hidden!r}):
    raise SystemExit(5)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
if int(status["CapEff"], 16) or int(status["CapPrm"], 16):
    raise SystemExit(6)
def outside(kind):  # this process's id on the machine, mapped out of its user namespace
    own = os.geteuid() if kind == "uid" else os.getegid()
    for line in open("/proc/self/%s_map" % kind):
        inside, there, count = map(int, line.split())
        if inside <= own < inside + count:
            return there + own - inside
if {as_nobody!r} and (outside("uid") != {nobody} or outside("gid") != {nobody}):
    raise SystemExit(7)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS
    raise SystemExit(8)
if libc.memfd_create(b"probe", 0) >= 0 or libc.ptrace(0, 0, None, None) == 0:  # PTRACE_TRACEME
    raise SystemExit(9)
if sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()) != [os.getpid()]:
    raise SystemExit(10)  # any other process of the sandbox (a reaper) would run without the filter
"""


def probe(sandbox: Sandbox) -> bool:
    """A probe must run, write in its working folder, see a fresh PID namespace holding itself alone and an
    empty environment, hold no capabilities, be nobody when adept is root, not see a file beside its
    folder, fail to write anywhere else (the system's temporary folder, the home folder, the root folder),
    and fail to make a user namespace, a memfd or a ptrace request (the filter is in force)."""
    with scratch_folder() as scratch:
        token = secrets.token_hex(8)
        hidden = scratch.parent / f"adept-probe-hidden-{token}"
        outside = [scratch.parent / f"adept-probe-{token}", Path.home() / f".adept-probe-{token}"]
        outside.append(scratch / f"adept-probe-{token}")  # the program's own folder is read-only too
        outside.append(Path(f"/adept-probe-{token}"))
        try:
            hidden.write_text("the sandbox must not show this file")
            program = _PROBE.format(
                outside=[str(p) for p in outside], hidden=str(hidden), as_nobody=sandbox.as_nobody, nobody=NOBODY
            )
            code = run_program(sandbox, scratch, program, b"", 20.0)
            escaped = [path for path in outside if path.exists()]
        finally:
            for path in [*outside, hidden]:
                path.unlink(missing_ok=True)
        if code != 0:
            logger.debug("%s probe failed (%s): %s", sandbox.kind, code, read_tail(scratch / ".stderr"))
        return code == 0 and not escaped


class scratch_folder:
    """A temporary folder for the program and its captured output; `work` below it is where the sandbox
    mounts the program's writable space (the folder itself, without isolation)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="adept-exec-"))
        (self.path / "work").mkdir()
        os.chmod(self.path, 0o755)  # readable by nobody (the program, when adept runs as root)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sandbox_for(allow_unsafe_exec: bool) -> Sandbox:
    """The sandbox to run generated code in, or an error saying how to get one."""
    sandbox = detect_sandbox()
    if sandbox is not None:
        return sandbox
    if not allow_unsafe_exec:
        if _is_root():
            how = (
                "As root, adept makes the namespaces itself and runs the program as nobody: that needs the right "
                "to create mount namespaces (CAP_SYS_ADMIN; a default Docker container lacks it) and setpriv from "
                "util-linux. Run adept as a normal user with bubblewrap (apt-get install bubblewrap) instead"
            )
        else:
            how = "Install bubblewrap (e.g. apt-get install bubblewrap) or enable unprivileged user namespaces"
        raise ExecutionError(
            "generated code cannot be executed in isolation here: neither bubblewrap (bwrap) nor unshare with "
            f"namespaces works on this machine. {how}; or, to run generated code unisolated at your own risk, "
            "set allow_unsafe_exec: true (adept eval --allow-unsafe-exec)"
        )
    logger.warning(
        "executing generated code WITHOUT isolation (allow_unsafe_exec): it can read and change this machine"
    )
    return Sandbox("none")


def run_program(
    sandbox: Sandbox, scratch: Path, program: str, stdin: bytes, timeout: float, memory_mb: int | None = None
) -> int | None:
    """Run `program` as scratch/program.py in `sandbox`, feeding it `stdin`; its output goes to
    scratch/.stdout and scratch/.stderr. The exit status, or None when it ran past `timeout` seconds (then
    it and everything it started are killed). `memory_mb` bounds the program and all it starts together,
    in a cgroup, where one can be made here."""
    sandbox.prepare(scratch)
    path = scratch / "program.py"
    path.write_text(program if sandbox.kind == "none" else seccomp.prologue() + program, encoding="utf-8")
    path.chmod(0o644)  # readable by nobody whatever the umask
    group = memory_group.make(memory_mb * 2**20) if memory_mb and sandbox.kind != "none" else None
    command = sandbox.command(scratch)
    with open(scratch / ".stdout", "wb") as stdout, open(scratch / ".stderr", "wb") as stderr:
        process = subprocess.Popen(
            group.wrap(command) if group is not None else command,
            cwd=scratch,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: killed whole on timeout
            env={} if sandbox.kind == "none" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            _kill_group(process)
            if group is not None:
                group.close()


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the sandbox: the tool's process group, and the program, which bubblewrap starts in a session of
    its own as PID 1 of its namespace (everything it started dies with it)."""
    if not hasattr(os, "killpg"):  # Windows: no process groups (and no sandbox)
        process.kill()
        process.wait()
        return
    program = _children(process.pid)
    for pid, kill in [(process.pid, os.killpg), *((child, os.kill) for child in program)]:
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc; none where there is no /proc)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()  # after the command's name, which may hold spaces
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def read_tail(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - limit, 0))
        return handle.read().decode("utf-8", "replace")
