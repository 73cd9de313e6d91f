"""Atomic writes: a reader (or a resumed run) never sees a half-written file or directory; a write that
fails names the file it was writing."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Write failures a user fixes on the machine (space, quota, a read-only or failing disk), said in one line
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


# The permissions a plain open() / mkdir() would give (mkstemp and mkdtemp make private 0600 / 0700 ones,
# which a colleague or a server running as another user could not read). Read once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def disk_failure(error: BaseException) -> OSError | None:
    """`error` as the OSError of a full (or read-only, or failing) disk, or None when it is something else.
    safetensors reports the operating system's error inside its own message, as Rust prints it."""
    if isinstance(error, OSError):
        return error if error.errno in DISK_ERRORS else None
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found and int(found.group(1)) in DISK_ERRORS:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return None


def _named(error: OSError, path: Path) -> OSError:
    """`error` naming `path` when it names no file (a failed write() or flush() names none)."""
    if error.filename is not None and not Path(error.filename).name.startswith("."):
        return error
    return OSError(error.errno, error.strerror, str(path))


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch directory beside `target`; on success it replaces `target` in one rename.

    If the body raises, the scratch directory is removed and `target` is left as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(scratch, 0o777 & ~_UMASK)
    except OSError as error:
        raise _named(error, target) from None
    try:
        yield scratch
        _fsync_tree(scratch)
        if target.exists():
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
            os.replace(scratch, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(scratch, target)
    except OSError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        raise _named(error, target) from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


@contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[Any]:
    """A text handle on a scratch file beside `path`, renamed over it only when the body succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(scratch, 0o666 & ~_UMASK)
    except OSError as error:
        raise _named(error, path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except OSError as error:
        Path(scratch).unlink(missing_ok=True)
        raise _named(error, path) from None
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_text_file(path) as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | os.PathLike, error: type[Exception], what: str) -> dict[str, Any]:
    """A JSON object from `path`; unreadable, malformed or not an object raises `error` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem})") from None
    except RecursionError:
        raise error(f"{path} is nested too deeply to be {what}") from None
    if not isinstance(data, dict):
        raise error(f"{path} is not {what} (a JSON object)")
    return data


def read_yaml(path: str | os.PathLike, error: type[Exception], what: str) -> Any:
    """Parsed YAML; an unreadable, non-UTF-8 or malformed file, or a mapping that gives a key twice (the
    last would silently win), raises `error` naming the file (and the line)."""
    import yaml

    path = Path(path)
    try:
        loader = _unique_keys_loader()(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            expanded = _expanded_size(node)
            if expanded > MAX_YAML_NODES:
                raise error(
                    f"{path}: its anchors and aliases expand to over {MAX_YAML_NODES:,} values; write the settings "
                    "out plainly"
                )
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror}") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not UTF-8 text (byte {problem.start}); save the {what} as UTF-8") from None
    except _DuplicateKey as problem:
        raise error(f"{path}:{problem.line}: {problem.key!r} is given twice; keep one") from None
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({problem})") from None


# What a YAML file adept reads may hold once its aliases are expanded: a recipe or task file has tens of
# values; a "billion laughs" file (aliases of aliases) has 10^9 and took gigabytes once anything walked it.
MAX_YAML_NODES = 100_000


def _expanded_size(node: Any) -> int:
    """How many values `node` stands for with every alias written out (each shared node counted once per
    use), computed without expanding anything."""
    import yaml

    sizes: dict[int, int] = {}

    def size(current: Any) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        sizes[id(current)] = 1  # a node that contains itself counts once (the constructor refuses it later)
        total = 1
        if isinstance(current, yaml.SequenceNode):
            total += sum(size(child) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in current.value)
        total = min(total, MAX_YAML_NODES + 1)  # enough to refuse; keeps the numbers small
        sizes[id(current)] = total
        return total

    return 0 if node is None else size(node)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _unique_keys_loader() -> Any:
    """yaml's safe loader, refusing a mapping that gives one key twice."""
    import yaml

    class UniqueKeysLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeysLoader


def _fsync_tree(directory: Path) -> None:
    """Flush every file to disk, with the usual permissions (safetensors, for one, writes 0600 files)."""
    for entry in directory.rglob("*"):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            os.chmod(entry, 0o777 & ~_UMASK)
        elif entry.is_file():
            os.chmod(entry, 0o666 & ~_UMASK)
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
