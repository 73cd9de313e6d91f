"""A memory bound on a sandboxed program as a whole (it and every process it starts): a cgroup made below
adept's own, where this machine lets adept make one (cgroup v2 with the memory controller delegated, or
cgroup v1's memory hierarchy, as root usually can). Where none can be made the bound is per process only
(RLIMIT_AS, set by the program's first lines), and `available()` says so for the sandbox's description."""

from __future__ import annotations

import functools
import secrets
import shutil
from pathlib import Path

CGROUPS = Path("/sys/fs/cgroup")


def _own_groups() -> list[tuple[Path, str, str]]:
    """(folder, limit file, swap limit file) where a child group of this process's own could live."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    places = []
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":  # cgroup v2
            places.append((CGROUPS / path.lstrip("/"), "memory.max", "memory.swap.max"))
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = CGROUPS / "memory" / path.lstrip("/")
            places.append((folder, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"))
    return places


class MemoryGroup:
    """One program's group: made before it starts, removed after it has ended."""

    def __init__(self, folder: Path, limit_file: str, swap_file: str, limit_bytes: int):
        self.folder = folder
        folder.mkdir()
        try:
            (folder / limit_file).write_text(str(limit_bytes))
            if (folder / swap_file).exists():  # no swapping past the bound (v1 counts memory + swap here)
                (folder / swap_file).write_text(str(limit_bytes) if swap_file.startswith("memory.memsw") else "0")
        except OSError:
            self.close()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        """`command`, started from inside the group (the shell joins it, then becomes the command)."""
        procs = str(self.folder / "cgroup.procs")
        return [shutil.which("sh") or "/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]

    def close(self) -> None:
        """Remove the group; its processes are gone by now (killed with the program's process group)."""
        try:
            self.folder.rmdir()
        except OSError:
            pass  # a process still leaving: the empty group is harmless and the kernel frees it with its parent


def make(limit_bytes: int) -> MemoryGroup | None:
    """A new group bounding `limit_bytes`, or None where this machine lets adept make none."""
    for parent, limit_file, swap_file in _own_groups():
        try:  # a hierarchy without the memory controller, or not writable here, refuses the mkdir or the limit
            return MemoryGroup(parent / f"adept-{secrets.token_hex(6)}", limit_file, swap_file, limit_bytes)
        except OSError:
            continue
    return None


@functools.cache
def available() -> bool:
    """Whether a group can be made here (tried once per process)."""
    group = make(64 * 2**20)
    if group is None:
        return False
    group.close()
    return True
