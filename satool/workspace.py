"""The workspace file ``satool.toml``: what earlier stages made here.

Every stage records its inputs and outputs (checkpoint, corpus, alignments,
cache, result directories) in ``./satool.toml`` (or the file named by
``$SATOOL_WORKSPACE``) and reads its defaults from it, so that after
``satool pretrain``, ``extract`` and ``metric``, exactly
``satool prune --by globalness --task speaker`` works. Options given on the
command line always win. Paths are stored relative to the file's directory.

Format (docs/workspace.md)::

    # written by satool; safe to edit
    [paths]
    checkpoint = "model.ckpt"
    corpus = "corpus"
    cache = "attn.cache"
    metrics = "results/metric"

    [stages.extract]
    finished = "2026-11-25T10:00:00"
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import tomllib
from pathlib import Path
from typing import Any

from satool.errors import InputError, UsageError

FILE_NAME = "satool.toml"
KNOWN_PATHS = ("checkpoint", "corpus", "alignments", "cache", "health", "metrics", "segment", "relate", "probe",
               "prune", "spans", "report")


def workspace_file() -> Path:
    return Path(os.environ.get("SATOOL_WORKSPACE", FILE_NAME))


def _read(file: Path) -> dict[str, Any]:
    """The workspace file's tables, checked: ``paths`` maps names to text, ``stages`` maps stage
    names to tables (an edited file with other types is an InputError here, before any work)."""
    if not file.exists():
        return {}
    if not file.is_file():
        raise InputError("not a regular file", path=file)
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"unreadable workspace file ({' '.join(str(exc).split())})", path=file) from None
    paths = data.get("paths", {})
    if not isinstance(paths, dict):
        raise InputError("[paths] must be a table of names and paths", path=file)
    for name, value in paths.items():
        if not isinstance(value, str):
            raise InputError(f"paths.{name} must be text (a path), found {type(value).__name__}", path=file)
    stages = data.get("stages", {})
    if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
        raise InputError("[stages] must hold one table per stage", path=file)
    return data


HEADER = "# satool workspace: what earlier stages made here (read for defaults; safe to edit)\n"


def _dump(data: dict[str, Any]) -> str:
    """TOML text (tomli-w: every string escaped, so a path with a newline or quote stays one value)."""
    import tomli_w

    return HEADER + tomli_w.dumps(data)


class Workspace:
    """Read defaults from, and record results into, a ``satool.toml``."""

    def __init__(self, file: str | Path | None = None):
        self.file = Path(file) if file is not None else workspace_file()
        self.data = _read(self.file)

    @property
    def root(self) -> Path:
        return self.file.resolve().parent

    def path(self, name: str) -> Path | None:
        """A recorded path (absolute), or None."""
        value = self.data.get("paths", {}).get(name)
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def resolve(self, name: str, given: str | Path | None, *, required: bool = True,
                hint: str = "") -> Path | None:
        """``given`` if set, else the recorded path; a UsageError if required and neither exists."""
        if given is not None and str(given) != "":
            return Path(given)
        recorded = self.path(name)
        if recorded is None and required:
            where = f"./{self.file}" if not self.file.is_absolute() else str(self.file)
            raise UsageError(
                f"no {name} given and {where} records none" + (f" ({hint})" if hint else "")
            )
        return recorded

    def setting(self, stage: str, key: str, default: Any = None) -> Any:
        """A stage's recorded setting; ``default`` when absent (or of another type than ``default``)."""
        value = self.data.get("stages", {}).get(stage, {}).get(key, default)
        if default is not None and not isinstance(value, type(default)):
            return default
        return value

    def record(self, stage: str, paths: dict[str, str | Path | None] | None = None, **settings: Any) -> None:
        """Store ``paths`` (made relative to the workspace) and the stage's settings; atomic."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.file.with_name(f".{self.file.name}.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = _read(self.file)
            stored = data.setdefault("paths", {})
            for name, value in (paths or {}).items():
                if value is None:
                    continue
                if name not in KNOWN_PATHS:
                    raise ValueError(f"unknown workspace path {name!r}")
                stored[name] = self._relative(Path(value))
            entry = data.setdefault("stages", {}).setdefault(stage, {})
            entry.update({k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items() if v is not None})
            entry["finished"] = _dt.datetime.now().replace(microsecond=0).isoformat()
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(_dump(data))
            os.replace(tmp, self.file)
            self.data = data

    def _relative(self, path: Path) -> str:
        absolute = path.resolve()
        try:
            return str(absolute.relative_to(self.root))
        except ValueError:
            return str(absolute)
