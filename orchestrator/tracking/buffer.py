"""The on-disk buffer of MLflow metric values and tags that the tracking server has not taken
yet (an outage), and their replay when it is back. Part of the tracking package's one door to
MLflow: every write it replays goes through `failing_fast`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import warnings
from pathlib import Path

from orchestrator.common.redact import redact_exception
from orchestrator.tracking.client import failing_fast

log = logging.getLogger(__name__)

_LINE_MIN_BYTES = len(json.dumps({"tag": "", "value": ""})) + 1  # the shortest line `add` writes
_BATCH_MAX_METRICS = 1000  # the REST API's limit per log_batch call


class MetricBuffer:
    """Metric values and tags that MLflow has not taken yet, one JSON line each, on disk.

    On disk, so that a restarted driver or Train controller still replays them. Bounded: beyond
    `tracking.buffer_max_values` the oldest values are dropped, with a warning.

    Shared by the processes of a node without losing a line: `add` appends to `<run id>.jsonl`,
    and `flush` first claims that file by renaming it to `<run id>.jsonl.<ns>-<pid>.replaying`,
    both under a lock on the folder held for milliseconds; it then logs the claimed lines
    without that lock and deletes them. A replay holds a lock on what it claimed, so a run has one
    replay at a time (its tags keep their order) and the claim of a process that died is taken
    over by the next replay. Lines MLflow did not take go back to `<run id>.jsonl`, ahead of
    those added meanwhile; an unreadable line (a process killed mid-write) is moved aside to
    `<run id>.corrupt`, with a warning. A replay that dies between logging and deleting leaves
    lines that are logged again: MLflow's SQL stores keep an identical metric value once.
    """

    def __init__(self, path: Path, max_values: int):
        self.path = path  # <run id>.jsonl, where new lines are appended
        self.max_values = max_values

    @classmethod
    def for_run(cls, config, run_id: str | None) -> "MetricBuffer":
        """The buffer of `run_id` in `config.buffer_dir` (a `TrackingConfig`)."""
        folder = Path(config.buffer_dir).expanduser().resolve()
        return cls(folder / f"{run_id}.jsonl", config.buffer_max_values)

    def count(self) -> int:
        """Values and tags held: waiting to be replayed, or being replayed now."""
        return sum(_count_lines(path) for path in [self.path, *self._claimed_files()])

    def highest_step(self, key: str) -> int:
        """The highest step of `key` held (0: none), read without claiming anything."""
        highest = 0
        for path in [self.path, *self._claimed_files()]:
            for line in _read_lines(path):
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                    record = json.loads(line)
                    if record.get("key") == key:
                        highest = max(highest, int(record["step"]))
        return highest

    def add(self, metrics: list, tags: dict[str, str] | None = None) -> None:
        """Appends a line per metric value and tag, in one write; raises OSError if it cannot."""
        lines = [
            json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})
            for m in metrics
        ]
        lines += [json.dumps({"tag": k, "value": v}) for k, v in (tags or {}).items()]
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._folder_locked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                # Counted only when the file is big enough to hold max_values lines at all
                if size + len(data) > self.max_values * _LINE_MIN_BYTES:
                    if _count_lines(self.path) + len(lines) > self.max_values:
                        self._drop_oldest(lines)
                        return
                if size and os.pread(fd, 1, size - 1) != b"\n":  # after a cut line: ours apart
                    data = b"\n" + data
                _write_all(fd, data)
            finally:
                os.close(fd)

    def flush(self, client, run_id: str, wait_s: float = 30) -> int:
        """Logs what is held to `run_id` and deletes it; returns the number of metric values.

        Raises if MLflow fails: what it did not take is held again. Waits up to `wait_s` for
        another process's replay of this run to end, then raises TimeoutError.
        """
        from mlflow.entities import Metric, RunTag

        claims = self._claim(wait_s)
        if not claims:
            return 0
        metrics, tag_lines = [], []
        logged, tags_logged = None, False  # None: not read yet, so the claimed files stay
        try:
            records = self._parse([line for _, path in claims for line in _read_lines(path)])
            metrics = [
                (line, Metric(r["key"], r["value"], r["timestamp"], r["step"]))
                for line, r in records
                if "key" in r
            ]
            tag_lines = [line for line, r in records if "tag" in r]
            tags = {r["tag"]: r["value"] for _, r in records if "tag" in r}  # the latest of each
            logged = 0
            for start in range(0, len(metrics), _BATCH_MAX_METRICS):
                batch = metrics[start : start + _BATCH_MAX_METRICS]
                client.log_batch(run_id, metrics=[metric for _, metric in batch])
                logged += len(batch)
            if tags:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            tags_logged = True
            return len(metrics)
        finally:
            pending = None
            if logged is not None:  # what MLflow did not take is held again
                pending = [line for line, _ in metrics[logged:]]
                pending += [] if tags_logged else tag_lines
            self._settle(claims, pending)

    def _claim(self, wait_s: float) -> list[tuple[int, Path]]:
        """This run's lines moved out of the appenders' way: [(locked descriptor, file)], oldest
        first. Claims left by a dead process come first; [] when nothing is held."""
        deadline = time.monotonic() + wait_s
        while True:
            claims, busy = [], None
            try:
                with self._folder_locked():
                    for path in self._claimed_files():
                        fd = os.open(path, os.O_RDONLY)
                        claims.append((fd, path))
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:  # a live replay of this run
                            busy = path
                            break
                    else:
                        if self.path.exists():
                            fd = os.open(self.path, os.O_RDONLY)
                            claims.append((fd, self.path))
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one else has
                            claimed = self.path.with_name(
                                f"{self.path.name}.{time.time_ns():020d}-{os.getpid()}.replaying"
                            )
                            os.rename(self.path, claimed)
                            claims[-1] = (fd, claimed)
                        return claims
            except (FileNotFoundError, NotADirectoryError):
                if claims or self.path.parent.is_dir():
                    _close_all(claims)
                    raise
                return []  # no folder: nothing held
            except BaseException:
                _close_all(claims)
                raise
            _close_all(claims)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"another process is still replaying {busy}")
            time.sleep(0.05)

    def _parse(self, lines: list[str]) -> list[tuple[str, dict]]:
        """(line, record) for each readable line; the others are moved aside, with a warning."""
        records, unreadable = [], []
        for line in lines:
            try:
                record = json.loads(line)
                if "key" in record:
                    record = {
                        "key": str(record["key"]),
                        "value": float(record["value"]),
                        "timestamp": int(record["timestamp"]),
                        "step": int(record["step"]),
                    }
                else:
                    record = {"tag": str(record["tag"]), "value": str(record["value"])}
            except (ValueError, TypeError, KeyError):
                unreadable.append(line)
                continue
            records.append((line, record))
        if unreadable:
            aside = self.path.with_suffix(".corrupt")
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    _write_all(fd, "".join(line + "\n" for line in unreadable).encode())
                finally:
                    os.close(fd)
                where = f"moved aside to {aside}"
            except OSError as error:
                where = f"dropped, as {aside} cannot be written ({redact_exception(error)})"
            warnings.warn(
                f"MLflow buffer {self.path}: {len(unreadable)} unreadable line(s) (a process "
                f"killed mid-write?) {where}; the other {len(records)} are replayed",
                stacklevel=3,
            )
        return records

    def _settle(self, claims: list[tuple[int, Path]], pending: list[str] | None) -> None:
        """Ends a replay: `pending` goes back ahead of what was added meanwhile and the claimed
        files are deleted; with None (a failure before logging) they stay for the next replay."""
        try:
            if pending is not None:
                with self._folder_locked():
                    if pending:
                        self._replace(pending + _read_lines(self.path))
                    for _, path in claims:
                        path.unlink()
        finally:
            _close_all(claims)

    def _drop_oldest(self, lines: list[str]) -> None:
        held = _read_lines(self.path)
        kept = (held + lines)[-self.max_values :]
        warnings.warn(
            f"MLflow buffer {self.path} is full ({self.max_values} values): dropping the "
            f"{len(held) + len(lines) - len(kept)} oldest (tracking.buffer_max_values)",
            stacklevel=3,
        )
        self._replace(kept)

    def _replace(self, lines: list[str]) -> None:
        """The buffer file becomes `lines` (called with the folder locked)."""
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text("".join(line + "\n" for line in lines))
        scratch.replace(self.path)

    def _claimed_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.*.replaying"))

    @contextlib.contextmanager
    def _folder_locked(self):
        """Excludes the other processes' appends and claims in this folder meanwhile."""
        fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")  # garbage bytes: an unreadable line, not a crash
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [line for line in text.split("\n") if line.strip()]


def _count_lines(path: Path) -> int:
    """The lines in `path` without decoding it (0 when it is not there)."""
    count, last = 0, b"\n"
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                count, last = count + chunk.count(b"\n"), chunk[-1:]
    except OSError:  # not there (or unreadable): this count is for messages and the bound
        return 0
    return count + (last != b"\n")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _close_all(claims: list[tuple[int, Path]]) -> None:
    for fd, _ in claims:
        os.close(fd)


def replay_buffers(client, buffer_dir: str, max_values: int) -> None:
    """Log what earlier outages left in `tracking.buffer_dir` for runs in this store.

    That includes the buffers of runs still live in other processes: their lines are claimed
    under a lock (see `MetricBuffer`), so one appended meanwhile is never lost.
    """
    folder = Path(buffer_dir).expanduser()
    run_ids = set()
    if folder.is_dir():
        run_ids |= {path.name.removesuffix(".jsonl") for path in folder.glob("*.jsonl")}
        run_ids |= {path.name.split(".jsonl.")[0] for path in folder.glob("*.jsonl.*.replaying")}
    for run_id in sorted(run_ids):
        try:
            with failing_fast():
                client.get_run(run_id)  # another store's run: leave it for that store
                buffer = MetricBuffer(folder / f"{run_id}.jsonl", max_values)
                replayed = buffer.flush(client, run_id, wait_s=0)  # busy: another replays it
        except Exception:  # noqa: BLE001 - not this store's run, or not reachable now
            continue
        if replayed:
            log.info(f"MLflow: replayed {replayed} metric values buffered for run {run_id}")
