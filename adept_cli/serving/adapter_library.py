"""Folders whose every run and adapter is served by its folder name (`adept serve --serve-dir DIR`,
repeatable): `runs/sst2-adept` answers to the model name `sst2-adept`, with no flag or POST per adapter.

An entry is a folder directly inside one of them holding a run (config.yaml), an adapter
(adapter_config.json: adept's own or PEFT prompt tuning) or a merged export; other folders are passed over
and named at startup. The folders are read again when the server lists its models, and a name asked for
that is not known yet is looked for, so adapters added later are served without a restart. Two folders
that give the same name are refused: at startup (naming both) and on request."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AdeptError
from ..prompt.adapter_files import ADAPTER_CONFIG, is_merged_export
from .adapter_folders import AdapterFolders
from .protocol import ADAPTER_NAME


class NameClash(AdeptError, ValueError):
    """Two folders give the same adapter name."""


@dataclass
class Scan:
    """What one reading of the folders found."""

    found: dict[str, Path] = field(default_factory=dict)  # name -> its folder
    passed_over: list[str] = field(default_factory=list)  # "PATH: why", for folders that are not served
    clashes: dict[str, list[Path]] = field(default_factory=dict)  # a name two folders give -> both


class AdapterLibrary(AdapterFolders):
    """The folders of --serve-dir; `allows` (every file an entry is read from must lie inside one of them,
    links followed) as for --adapter-dir."""

    def __init__(self, folders: list[str | os.PathLike]):
        super().__init__(folders, "--serve-dir")

    def scan(self) -> Scan:
        scan = Scan()
        for folder in self.folders:
            try:
                children = sorted(folder.iterdir())
            except OSError as error:
                scan.passed_over.append(f"{folder}: cannot be read ({error.strerror})")
                continue
            for child in children:
                if not child.is_dir():
                    continue
                if not holds_adapter(child):
                    scan.passed_over.append(f"{child}: neither a run, an adapter nor a merged export")
                elif not re.match(ADAPTER_NAME, child.name):
                    scan.passed_over.append(
                        f"{child}: its name is not an adapter name (letters, digits and . _ : -, at most 64)"
                    )
                elif child.name in scan.found:
                    scan.clashes.setdefault(child.name, [scan.found[child.name]]).append(child)
                else:
                    scan.found[child.name] = child
        for name in scan.clashes:
            del scan.found[name]
        return scan

    def find(self, name: str) -> Path | None:
        """The folder serving `name`, if one holds an adapter of that name (two: NameClash)."""
        if not re.match(ADAPTER_NAME, name):
            return None
        matches = [folder / name for folder in self.folders if holds_adapter(folder / name)]
        if len(matches) > 1:
            raise NameClash(clash_message(name, matches))
        return matches[0] if matches else None


def holds_adapter(path: Path) -> bool:
    try:
        return path.is_dir() and (
            (path / "config.yaml").is_file() or (path / ADAPTER_CONFIG).is_file() or is_merged_export(path)
        )
    except OSError:
        return False


def clash_message(name: str, paths: list[Path]) -> str:
    return (
        f"two folders are both named {name!r}: {' and '.join(map(str, paths))}; rename one (an adapter is "
        "served by its folder name)"
    )
