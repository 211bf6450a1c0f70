"""One writer at a time in a folder: a lock file beside what it guards, on a local disk or in an
object store (`exclusive`).

Local folders: an `fcntl` lock, released by the kernel when its holder dies.

Object stores: the lock is an object holding its holder's token and a heartbeat, renewed every
LOCK_HEARTBEAT_S. On S3 (and S3-compatible stores that honour conditional requests) every change
is conditional: the lock is created only where none is (`If-None-Match: *`), renewed, taken over
and deleted only as the version last read (`If-Match: <ETag>`), so two writers never both get it
and a holder never overwrites or deletes another's. Other stores (GCS, ...) run the same steps
as write-then-read-back: a second writer that starts while one works is stopped, two that start
in the same instant may not be.

A holder believes it holds the lock only while its last confirmed renewal is younger than
LOCK_STALE_S - LOCK_HEARTBEAT_S; another writer takes it over only once the heartbeat is older
than LOCK_STALE_S, or once its holder is known to be gone (it ran in this kernel and pid namespace,
and its pid has exited or now belongs to a newer process). So a holder cut off from the store, or
paused, stops believing before anyone else may start; the work calls `Lease.check()` before each
step that must not run without the lock, which raises `LockLost` once it is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid

import pyarrow.fs as pafs

from orchestrator.common.errors import ConfigError, InputError
from orchestrator.common.storage import Location

LOCK_HEARTBEAT_S = 20.0
LOCK_STALE_S = 90.0
DRIVER_LOCK = ".driver.lock"  # in a run's (or a sweep's) folder, while a driver runs it
CREATE_SETTLE_S = 0.5  # stores without conditional writes: a racing writer's copy lands by then


class Busy(RuntimeError):
    """Another process holds the lock (its holder is in the message)."""


class LockLost(InputError):
    """The lock was taken over (or could not be renewed): the work stops, with this one line."""


class Lease:
    """What a holder knows of its lock: `check()` before any step that needs it."""

    def __init__(self, where: str, renewed: bool = True):
        self.where, self.lost, self.confirmed = where, "", time.monotonic()
        self.renewed = renewed  # a heartbeat keeps it (object stores); False: the kernel does

    @property
    def held(self) -> bool:
        if self.lost or not self.renewed:
            return not self.lost
        return time.monotonic() - self.confirmed < LOCK_STALE_S - LOCK_HEARTBEAT_S

    def check(self) -> None:
        if not self.held:
            reason = self.lost or f"not renewed for {time.monotonic() - self.confirmed:.0f} s"
            raise LockLost(
                f"lost the lock {self.where} ({reason}): another writer may have taken it over; "
                "stopped before writing more"
            )


@contextlib.contextmanager
def exclusive(location: Location, name: str, what: str):
    """Hold the lock file `name` in `location` while the block runs (it gets the `Lease`); raise
    `Busy` naming the holder when another process holds it, and `LockLost` at the end of a block
    during which the lock was lost."""
    location.make_dirs()
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "what": what, **_process_id()}
    if isinstance(location.fs, pafs.LocalFileSystem):
        with _local_lock(location.join(name), owner):
            yield Lease(location.uri_of(name), renewed=False)  # held until the process ends
        return
    with _object_lock(_store_for(location, name), owner) as lease:
        yield lease
        lease.check()


@contextlib.contextmanager
def sole_driver(folder: str, field: str, what: str):
    """One driver at a time for the run (or sweep, study) whose folder is `folder`: a second
    one started with the same `field` (name) is refused instead of adopting the live one's
    MLflow run and checkpoints."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(Location.of(folder), DRIVER_LOCK, what))
        except Busy as busy:
            raise ConfigError(
                f"{field}: {what} is running in another driver ({busy}); wait for it to end, "
                f"or choose another {field}"
            ) from None
        yield


@contextlib.contextmanager
def _local_lock(path: str, owner: dict):
    import fcntl

    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise Busy(f"held by {holder}") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(owner).encode(), 0)
        yield
    finally:
        os.close(handle)  # releases the lock; the file stays (deleting it would race a waiter)


def _process_id() -> dict:
    """What names this process beyond host and pid: the kernel's boot id and the pid namespace
    (containers sharing a hostname have their own), and the process's start time."""
    import psutil

    found = {"started": psutil.Process().create_time()}
    with contextlib.suppress(OSError):
        found["boot"] = open("/proc/sys/kernel/random/boot_id").read().strip()  # noqa: SIM115
        found["pid_ns"] = os.readlink("/proc/self/ns/pid")
    return found


def _gone(owner: dict) -> bool:
    """Whether a lock's holder is known to have exited: it ran in this kernel and pid namespace
    and its pid is free, or taken by a process started later. Unknown: not gone (wait for its
    heartbeat to go stale)."""
    import psutil

    here = _process_id()
    if "boot" not in here or any(owner.get(key) != here[key] for key in ("boot", "pid_ns")):
        return False
    try:
        return abs(psutil.Process(int(owner["pid"])).create_time() - owner["started"]) > 1
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


@contextlib.contextmanager
def _object_lock(store, owner: dict):
    token = uuid.uuid4().hex
    body = lambda: {"token": token, "owner": owner, "heartbeat": time.time()}  # noqa: E731
    held, version = store.read()
    if held is None:
        version = store.create(body(), token)
    elif time.time() - held.get("heartbeat", 0) >= LOCK_STALE_S or _gone(held.get("owner", {})):
        version = store.replace(body(), version, token)  # only the version we judged stale
    else:
        raise Busy(f"held by {json.dumps(held.get('owner'))}")
    if version is None:
        raise Busy("taken by a writer that started at the same moment")
    lease = Lease(store.where)
    stop = threading.Event()

    def renew() -> None:
        nonlocal version
        while not stop.wait(LOCK_HEARTBEAT_S) and not lease.lost:
            try:
                renewed = store.replace(body(), version, token)
            except OSError:
                continue  # the store is away: `lease.held` runs out unless it comes back
            if renewed is None:
                lease.lost = "another writer holds it now"
            else:
                version, lease.confirmed = renewed, time.monotonic()

    thread = threading.Thread(target=renew, daemon=True, name="lock-heartbeat")
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        if not lease.lost:
            with contextlib.suppress(Exception):  # unreachable: it goes stale instead
                store.delete(version, token)  # ours only: a conditional delete


def _store_for(location: Location, name: str):
    if location.fs.type_name == "s3":
        return _S3Object(location, name)
    return _PlainObject(location, name)


class _S3Object:
    """The lock object on S3, every write conditional on the version (ETag) last read."""

    def __init__(self, location: Location, name: str):
        import boto3

        bucket, _, prefix = location.join(name).partition("/")
        self.bucket, self.key, self.where = bucket, prefix, location.uri_of(name)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location.uri).query))
        options = {}
        if "endpoint_override" in query:  # pyarrow's URI options; else boto3 reads the AWS_*
            scheme = query.get("scheme", "https")
            options["endpoint_url"] = f"{scheme}://{query['endpoint_override']}"
        if "access_key" in query:
            options["aws_access_key_id"] = query["access_key"]
            options["aws_secret_access_key"] = query.get("secret_key")
        self.client = boto3.client("s3", region_name=query.get("region"), **options)

    def read(self) -> tuple[dict | None, str | None]:
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        except Exception as error:  # noqa: BLE001 - botocore's errors: as the OSError they are
            raise OSError(str(error)) from None
        try:
            return json.loads(found["Body"].read()), found["ETag"]
        except ValueError:
            return {}, found["ETag"]  # unreadable: judged by its (missing) heartbeat

    def _put(self, value: dict, **condition) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=json.dumps(value).encode(), **condition
            )["ETag"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
                return None  # someone else's now (or gone)
            raise OSError(str(error)) from None
        except Exception as error:  # noqa: BLE001 - connection errors
            raise OSError(str(error)) from None

    def create(self, value: dict, token: str) -> str | None:
        return self._confirmed(self._put(value, IfNoneMatch="*"), token)

    def replace(self, value: dict, version: str, token: str) -> str | None:
        return self._confirmed(self._put(value, IfMatch=version), token)

    def _confirmed(self, version: str | None, token: str) -> str | None:
        """A store that ignores conditions lets the last writer win: read ours back."""
        if version is None:
            return None
        held, now = self.read()
        return now if held and held.get("token") == token else None

    def delete(self, version: str, token: str) -> None:
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):  # (412: not ours any more)
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)


class _PlainObject:
    """The lock object on a store without conditional writes here: each write is checked by
    reading it back; the version is the holder's token."""

    def __init__(self, location: Location, name: str):
        self.location, self.name, self.where = location, name, location.uri_of(name)

    def read(self) -> tuple[dict | None, str | None]:
        try:
            held = self.location.read_json(self.name)
        except FileNotFoundError:
            return None, None
        except ValueError:
            return {}, None
        return held, held.get("token")

    def create(self, value: dict, token: str) -> str | None:
        if self.read()[0] is not None:
            return None
        self.location.write_json(value, self.name)
        time.sleep(CREATE_SETTLE_S)
        return token if self.read()[1] == token else None

    def replace(self, value: dict, version: str | None, token: str) -> str | None:
        if self.read()[1] != version:
            return None
        self.location.write_json(value, self.name)
        return token if self.read()[1] == token else None

    def delete(self, version: str, token: str) -> None:
        if self.read()[1] == token:
            self.location.fs.delete_file(self.location.join(self.name))
