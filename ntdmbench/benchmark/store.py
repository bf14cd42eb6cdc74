"""The run directory: append-only prediction shards, atomic result files, and the run key.

Layout (BOP's signature idea: the key names everything that changes outputs)::

    {out}/{model}/{dataset}/{run_key}/
        config.yaml          resolved configuration
        provenance.json      git commit + dirty flag, versions, device, seeds, times
        .lock[-rankNNN]      the OS lock of the process writing here, holding its pid
        log.txt              the run's log
        predictions/shard-{rank:03d}.jsonl   one Prediction per line, flushed per batch
        samples.jsonl        per-sample errors (written by scoring)
        metrics.json         aggregates (written by scoring)

A line is only ever appended; a line cut short by a kill is dropped on read and cut off before the
next append, so a restarted run neither loses nor duplicates a sample. A complete line that does not
parse is skipped with a warning naming the file and line (its sample is predicted again). A failure
record does not finish its sample: a rerun predicts it again and the newer record replaces it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from ntdmbench.datasets.records import DataError, Prediction
from ntdmbench.errors import MissingFileError, OutputError

log = logging.getLogger("ntdmbench")

UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EFBIG}
"""What a read-only, full or misnamed output folder raises."""


def run_key(payload: dict[str, Any]) -> str:
    """A short, stable hash of everything that changes a run's outputs."""
    canonical = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    _atomic_write(path, yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete lines only: a final line without its newline was cut short and is skipped, and a line
    that is not a JSON object (a disk error, a stray edit) is skipped with a warning naming it."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not (line.endswith(b"\n") and line.strip()):
                continue
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                _warn_once(path, number, f"is corrupt, skipped ({exc})")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                _warn_once(path, number, "is not a record with an id, skipped")
                continue
            yield row


_warned: set[tuple[str, int]] = set()


def _warn_once(path: Path, number: int, what: str) -> None:
    """A bad line is read several times per run (finished ids, then scoring); say so once."""
    if (str(path), number) not in _warned:
        _warned.add((str(path), number))
        log.warning("%s: line %d %s", path, number, what)


@contextlib.contextmanager
def writing_to(folder: Path) -> Iterator[None]:
    """Turn an unwritable output folder (read-only, full, a file in the way) into one line naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in UNWRITABLE:
            raise
        raise OutputError(f"{exc.filename or folder}: {exc.strerror} (writing results under {folder})") from exc


class FolderLock:
    """An OS lock (``fcntl.flock``) on a file in a run or suite folder, holding its owner's pid.

    A second process on the same folder is refused with one line naming the holder; the OS drops the
    lock when its process ends, however it ends, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{self.path.parent}: in use by process {holder} (another ntdmbench is writing "
                              f"here); wait for it to end or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_name(rank: int, world: int) -> str:
    """One lock per writer: the folder itself for a single process, one per rank under torchrun."""
    return ".lock" if world == 1 else f".lock-rank{rank:03d}"


class ShardWriter:
    """Appends predictions to one shard and flushes after every batch."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, predictions: Iterable[Prediction]) -> None:
        self._fh.write("".join(json.dumps(p.to_json()) + "\n" for p in predictions))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate a shard to its last complete line (what a SIGKILL mid-write leaves behind)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, out: str | Path, model: str, dataset: str, key: str) -> "RunDir":
        return cls(Path(out) / model / dataset / key)

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def shard(self, rank: int) -> Path:
        return self.predictions_dir / f"shard-{rank:03d}.jsonl"

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def config(self) -> dict[str, Any]:
        path = self.file("config.yaml")
        if not path.is_file():
            raise MissingFileError(f"{self.path}: not a run directory (no config.yaml)")
        return yaml.safe_load(path.read_text())

    def shards(self) -> list[Path]:
        return sorted(self.predictions_dir.glob("shard-*.jsonl"))

    def read_predictions(self) -> dict[str, Prediction]:
        """All predictions merged by id: the first successful record of an id wins; a failure record
        gives way to any later record of its id (the retry)."""
        merged: dict[str, Prediction] = {}
        for shard in self.shards():
            for row in read_jsonl(shard):
                current = merged.get(row["id"])
                if current is None or current.failure:
                    try:
                        merged[row["id"]] = Prediction.from_json(row)
                    except DataError as exc:
                        raise DataError(f"{shard}: {row['id']}: {exc}") from None
        return merged

    def finished_ids(self, keep_failures: bool = False) -> set[str]:
        """Ids with a prediction; a failed one counts as finished only with ``keep_failures``."""
        rows = [row for shard in self.shards() for row in read_jsonl(shard)]
        done = {row["id"] for row in rows if not row.get("failure")}
        return done | {row["id"] for row in rows} if keep_failures else done

    def set_aside_predictions(self) -> Path | None:
        """``--fresh``: move old shards out of the way (never delete results)."""
        if not self.predictions_dir.exists():
            return None
        target = self.path / f"predictions.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.predictions_dir.rename(target)
        return target
