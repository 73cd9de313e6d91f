"""Where `POST /v1/adapters` may load adapters from: the folders the operator named at start
(`adept serve --adapter-dir DIR`, repeatable). Without one, adding adapters over HTTP is off. A path is
taken inside a folder after every symbolic link is followed, and a refusal reads the same whether or not
the path exists."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AdeptError
from .protocol import AdapterOutsideFolders, RequestError


class AdapterFolders:
    def __init__(self, folders: list[str | os.PathLike], option: str = "--adapter-dir"):
        self.folders: list[Path] = []
        for folder in folders:
            real = Path(folder).resolve()
            if not real.is_dir():
                raise AdeptError(f"{option} {folder}: not a directory")
            if real not in self.folders:
                self.folders.append(real)

    def __bool__(self) -> bool:
        return bool(self.folders)

    def allows(self, path: Path) -> bool:
        """Whether `path`, with its links followed, lies inside one of the folders."""
        return self._inside(path) is not None

    def _inside(self, path: Path) -> Path | None:
        """`path` with its links followed, when it exists inside one of the folders."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
            return None
        return real if any(real == folder or real.is_relative_to(folder) for folder in self.folders) else None

    def resolve(self, given: str) -> Path:
        """The directory a request's `path` names: absolute, or relative to the first folder that holds
        it."""
        if not self.folders:
            raise RequestError(
                "adding adapters over HTTP is off: start adept serve with --adapter-dir DIR to allow the runs "
                "and adapters under DIR",
                "adapter_loading_disabled",
                403,
            )
        path = Path(given)
        candidates = [path] if path.is_absolute() else [folder / path for folder in self.folders]
        for candidate in candidates:
            real = self._inside(candidate)
            if real is not None and real.is_dir():
                return real
        raise AdapterOutsideFolders(given)
