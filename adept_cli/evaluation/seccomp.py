"""The seccomp filter every sandboxed program runs under: the system calls that would let it leave or
widen its sandbox, or hold memory outside its per-process bound, fail.

Set by the program's first lines (`prologue`), before any generated code, irrevocably, and inherited by
every process it starts. Refused (EPERM):

- new namespaces: `unshare` (any), `clone` with a namespace flag, `setns` (in a user namespace of its
  own a program holds every capability again and can mount a tmpfs as large as it likes);
  `clone3` fails with ENOSYS instead (a filter cannot read its flags; C libraries then fall back to clone);
- reaching other processes: `ptrace`, `process_vm_readv` / `process_vm_writev`, `pidfd_getfd`
  (a process of the sandbox without this filter, such as bubblewrap's own PID 1, would be a way out);
- mounts and roots: `mount`, `umount2`, `pivot_root`, `chroot` and the new mount API (`fsopen` ...);
- memory that outlives or escapes a process's address-space bound: `memfd_create`, `memfd_secret`,
  System V shared memory and message queues (`shmget`, `msgget`), and Unix sockets (`socketpair`,
  `socket(AF_UNIX)`), whose buffers the kernel holds;
- the kernel's own facilities: keys, `bpf`, `userfaultfd`, `perf_event_open`, io_uring (which runs
  system calls the filter never sees), file handles, modules, kexec, swap, reboot, accounting, quotas,
  the kernel log;
- every system call of another ABI (32-bit, x32), whose numbers differ.

Written out as classic BPF for the two architectures whose numbers it knows; on any other the program
stops before its first line, and so the sandbox's probe fails and no sandbox is used.
"""

from __future__ import annotations

import platform
import struct

# The calls refused outright, and the three with a rule of their own, by number on each architecture
# (x86_64 from arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from include/uapi/asm-generic/unistd.h).
_NUMBERS = {  # name: (x86_64, aarch64)
    "unshare": (272, 97), "setns": (308, 268), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "pidfd_getfd": (438, 438), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "move_mount": (429, 429), "open_tree": (428, 428),
    "mount_setattr": (442, 442), "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194),
    "msgget": (68, 186), "socketpair": (53, 199), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "bpf": (321, 280), "userfaultfd": (323, 282), "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "kexec_load": (246, 104),
    "kexec_file_load": (320, 294), "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142),
    "acct": (163, 89), "quotactl": (179, 60), "syslog": (103, 116),
}  # fmt: skip
_RULED = {"clone": (56, 220), "clone3": (435, 435), "socket": (41, 198)}
_MACHINES = ("x86_64", "aarch64")
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
AF_UNIX = 1
ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026  # SECCOMP_RET_ALLOW, ERRNO | EPERM, ERRNO | ENOSYS
LOAD, EQUAL, AT_LEAST, ANY_BIT, RETURN = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, JEQ, JGE, JSET, RET
ABI, NUMBER, FIRST_ARGUMENT = 4, 0, 16  # offsets in struct seccomp_data (the argument's low word)


def filter_program(machine: str) -> bytes:
    """The filter as classic BPF instructions (struct sock_filter), for `machine` (platform.machine())."""
    column = _MACHINES.index(machine)
    numbers = {name: pair[column] for name, pair in {**_NUMBERS, **_RULED}.items()}
    steps: list[tuple[int, int, str | None, str | None]] = []  # (code, k, jump-if-true label, if-false label)
    labels: dict[str, int] = {}

    def step(code: int, k: int, yes: str | None = None, no: str | None = None) -> None:
        steps.append((code, k, yes, no))

    def label(name: str) -> None:
        labels[name] = len(steps)

    step(LOAD, ABI)
    step(EQUAL, _ARCH[machine], no="refuse")
    step(LOAD, NUMBER)
    step(AT_LEAST, 0x40000000, yes="refuse")  # x32
    for name in _NUMBERS:
        step(EQUAL, numbers[name], yes="refuse")
    step(EQUAL, numbers["clone"], yes="clone")
    step(EQUAL, numbers["clone3"], yes="no such call")
    step(EQUAL, numbers["socket"], yes="socket")
    step(RETURN, ALLOW)
    label("clone")
    step(LOAD, FIRST_ARGUMENT)
    step(ANY_BIT, NAMESPACE_FLAGS, yes="refuse")
    step(RETURN, ALLOW)
    label("socket")
    step(LOAD, FIRST_ARGUMENT)
    step(EQUAL, AF_UNIX, yes="refuse")
    step(RETURN, ALLOW)
    label("refuse")
    step(RETURN, EPERM)
    label("no such call")
    step(RETURN, ENOSYS)

    def offset(at: int, target: str | None) -> int:
        jump = 0 if target is None else labels[target] - at - 1
        if not 0 <= jump < 256:
            raise ValueError(f"a jump of {jump} steps does not fit classic BPF")
        return jump

    return b"".join(
        struct.pack("HBBI", code, offset(at, yes), offset(at, no), k) for at, (code, k, yes, no) in enumerate(steps)
    )


def prologue(machine: str | None = None) -> str:
    """The first lines of every sandboxed program: death with the sandbox tool that started it, and the
    filter, set before anything else runs."""
    machine = machine or platform.machine()
    if machine not in _MACHINES:
        return f'raise SystemExit("adept sandbox: no system-call filter for {machine}; the program does not run")\n'
    return _PROLOGUE.format(program=filter_program(machine).hex())


_PROLOGUE = """\
def _adept_seccomp():
    import ctypes
    code = ctypes.create_string_buffer(bytes.fromhex("{program}"))

    class Program(ctypes.Structure):
        _fields_ = [("length", ctypes.c_ushort), ("steps", ctypes.c_void_p)]

    program = Program(len(code.raw) // 8, ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl(1, 9, None, 0, 0)  # killed with the sandbox tool (a change of user cleared the tool's setting)
    if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, ctypes.addressof(program), 0, 0):  # no new privileges; filter
        raise SystemExit("adept sandbox: the seccomp filter was refused (errno %d)" % ctypes.get_errno())


_adept_seccomp()
del _adept_seccomp
"""
