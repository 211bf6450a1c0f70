"""One local Ray per machine for the project's commands, so that two run side by side share the
machine's CPUs through Ray's scheduler instead of each starting a Ray that counts every CPU as
its own.

A command that needs Ray, run without RAY_ADDRESS, joins (`join`):
1. the head `cluster/local.py start` runs, if it runs (it lives until `cluster/local.py stop`);
2. else the machine's shared local Ray: the first command that needs Ray starts it (`ray start
   --head --block` on 127.0.0.1, token auth, the dashboard on 8265 when free), every command
   started while it runs joins it, and the last one to end stops it. A command alone starts and
   stops it just as `ray.init()` did its own.
A user's own Ray (`ray start` outside this project) is joined only through RAY_ADDRESS;
RAY_ADDRESS=local gives a command a Ray of its own.

A Ray's worker processes inherit the environment and the Python of whoever started it, so a
command whose credentials (AWS_*, MLFLOW_TRACKING_USERNAME, ...), Python, Ray version or auth mode
differ from those the shared Ray started with gets a Ray of its own instead, with a warning.

Its files, in $ALEXNET_RAY_HOME/local-ray/<host> (default ~/.cache/alexnet-ray/..., 0700):
`head.json` (pid and start time of `ray start`, its address and dashboard, what it runs, and a
salted digest of each credential variable it started with), `ray.log` (its output), `state.lock`
(held while a command starts, joins or stops it) and `users.lock` (held shared by every command
while it uses it: the one that can take it alone at its end is the last, and stops the head). A
command killed with SIGKILL cannot stop the head; the next command joins it and stops it when it
ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

from orchestrator.common import processes
from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact_text

log = logging.getLogger(__name__)

HOME_ENV = "ALEXNET_RAY_HOME"  # the project's local state: the shared Ray, cluster/local.py's head
DEFAULT_HOME = "~/.cache/alexnet-ray"
SHARED_FOLDER = "local-ray"
LOCAL_HEAD_FOLDER = "local-head"  # cluster/local.py's default --state-dir, in the same home
START_TIMEOUT_S = 120
LOCK_TIMEOUT_S = START_TIMEOUT_S + 60  # another command starting or stopping the head
DASHBOARD_PORT = 8265  # Ray's own default, when free
AUTH_MODE_ENV = "RAY_AUTH_MODE"
PRIVATE = "local"  # ray.init's address for a Ray of this process's own
# What a worker of the shared Ray reads from its environment (inherited from the command that
# started it) on behalf of every command: cloud credentials and regions, MLflow's credentials,
# the GPUs it may use. (MLFLOW_TRACKING_URI is not among them: each command passes its own.)
CREDENTIAL_PREFIXES = (
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "GCS_",
    "MLFLOW_TRACKING_",
    "CUDA_VISIBLE_",
    "RAY_AUTH_TOKEN",
)
NOT_CREDENTIALS = {"MLFLOW_TRACKING_URI"}


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def shared_folder() -> Path:
    """The shared Ray's files: per host, so that machines sharing a home folder (NFS) never
    take each other's head for their own."""
    return home() / SHARED_FOLDER / socket.gethostname()


class Membership:
    """This process's use of the shared head: `leave()` once it is done with Ray."""

    def __init__(self, folder: Path, users: int):
        self.folder, self.users, self.pid = folder, users, os.getpid()

    def leave(self) -> None:
        """Once this process is done with Ray: the last command to leave stops the head (and
        forgets it). (Nothing in a child forked from it, which shares its lock.)"""
        if os.getpid() != self.pid:
            return
        with _exclusive(self.folder / "state.lock"):
            # (on Linux a failed conversion of the shared lock drops it: closed just below)
            try:  # taken alone: no other command uses the head
                fcntl.flock(self.users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.users)
                return
            marker = _read(self.folder)
            if marker and processes.is_ours(marker["pid"], marker["started"]):
                processes.terminate({marker["pid"]: False})
                log.debug("stopped the machine's local Ray (no other command uses it)")
            (self.folder / "head.json").unlink(missing_ok=True)
            os.close(self.users)


def join() -> tuple[str, Membership | None]:
    """The address `ray.init` joins (see the module's doc), and the membership to `leave()`
    at the end (None: nothing to leave)."""
    local_head = _local_head_address()
    if local_head:
        os.environ[AUTH_MODE_ENV] = "token"  # the client side of its token auth
        log.info("joining the local head of cluster/local.py (%s)", local_head)
        return local_head, None
    folder = shared_folder()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    with _exclusive(folder / "state.lock"):
        users = os.open(folder / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(users, fcntl.LOCK_SH)  # (only a leaver, under state.lock, takes it alone)
        marker = _read(folder)
        if marker and processes.is_ours(marker["pid"], marker["started"]):
            differing = _differing(marker)
            if differing:
                os.close(users)
                log.warning(
                    "the machine's shared local Ray runs with other values of %s (from the "
                    "command that started it), which its workers would use for this command too: "
                    "this command starts a Ray of its own, and the two count the same CPUs",
                    ", ".join(differing),
                )
                return PRIVATE, None
            log.info(
                "joining the machine's local Ray, started by another command (dashboard %s): "
                "Ray shares the CPUs between them",
                marker["dashboard"],
            )
        else:
            try:
                marker = _start_head(folder)
            except BaseException:
                os.close(users)
                raise
    os.environ[AUTH_MODE_ENV] = marker.get("auth", "token")  # the client side: as the head's
    return marker["address"], Membership(folder, users)


def _local_head_address() -> str | None:
    """The address of the head `cluster/local.py start` runs in its default state folder, if
    that head still runs."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        head = json.loads((home() / LOCAL_HEAD_FOLDER / "head.json").read_text())
        if processes.is_ours(head["pids"]["ray"], head["started"]["ray"]):
            return f"127.0.0.1:{head['ray_port']}"
    return None


def _start_head(folder: Path) -> dict:
    """`ray start --head --block` in its own session, once its dashboard answers."""
    gcs, dashboard = processes.free_port(), processes.free_port(DASHBOARD_PORT)
    env = _head_environment(gcs)
    command = [processes.tool("ray"), "start", "--head", "--block", "--disable-usage-stats"]
    command += ["--node-ip-address", "127.0.0.1", "--port", str(gcs)]
    command += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)]
    for option in processes.RAY_AGENT_PORT_OPTIONS:
        command += [option, str(processes.free_port())]
    current = _current_cluster()
    before = current.read_text() if current.exists() else None
    ray_log = folder / "ray.log"
    with open(os.open(ray_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as output:
        head = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:  # (in its own session, a Ctrl-C here does not reach it: stopped here instead)
        return _started(folder, head, gcs, dashboard, before, env[AUTH_MODE_ENV])
    except BaseException:
        processes.terminate({head.pid: False})
        raise


def _started(folder: Path, head, gcs: int, dashboard: int, before: str | None, auth: str) -> dict:
    """The marker of `head` once its dashboard answers (InputError if it ends first)."""
    ray_log = folder / "ray.log"
    url = f"http://127.0.0.1:{dashboard}"
    if (
        not processes.until(
            lambda: head.poll() is not None or processes.answers(f"{url}/api/version"),
            START_TIMEOUT_S,
            0.2,
        )
        or head.poll() is not None
    ):
        tail = " | ".join(ray_log.read_text(errors="replace").strip().splitlines()[-3:])
        raise InputError(
            f"the local Ray did not start (`ray start --head` ended, or its dashboard did not "
            f"answer within {START_TIMEOUT_S} s; RAY_ADDRESS=local runs this command on a Ray of "
            f"its own); the end of {ray_log}: {redact_text(tail)}"
        )
    _put_back_current_cluster(before, gcs)
    # reaped as soon as it exits, whichever command stops it
    threading.Thread(target=head.wait, daemon=True, name="reap-ray-head").start()
    salt = secrets.token_hex(8)
    marker = {
        "pid": head.pid,
        "started": processes.start_time(head.pid),
        "address": f"127.0.0.1:{gcs}",
        "dashboard": url,
        "auth": auth,
        "runtime": _runtime(),
        "salt": salt,
        "credentials": _credential_digests(processes.environment(), salt),
    }
    written = folder / "head.json.new"  # whole or not at all, whenever this process ends
    written.write_text(json.dumps(marker, indent=2))
    written.replace(folder / "head.json")
    log.info(
        "started a local Ray for this machine's commands (dashboard %s); the last command "
        "using it stops it",
        url,
    )
    return marker


def _head_environment(gcs: int) -> dict[str, str]:
    """What the head and so its workers run with: this command's environment, but for the
    project's own variables; RAY_ADDRESS naming the head itself, so that its workers' own calls
    that find "the" Ray on the machine (Ray Train's placement group cleaner asks the State API
    so) find this one, whatever other Ray runs beside it; token auth unless opted out."""
    env = {k: v for k, v in processes.environment().items() if not k.startswith("ALEXNET_RAY_")}
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs}"
    env.update(processes.RAY_HEAD_ENV)
    auth = env[AUTH_MODE_ENV] = os.environ.get(AUTH_MODE_ENV) or "token"
    if auth == "token" and not (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")):
        token = Path("~/.ray/auth_token").expanduser()
        if not token.exists():  # made once; kept out of the output: it is the key to the cluster
            generate = [processes.tool("ray"), "get-auth-token", "--generate"]
            subprocess.run(generate, env=env, capture_output=True, check=True)
    return env


def _credential_digests(env, salt: str) -> dict[str, str]:
    """{name: salted digest of its value} of the credential variables in `env`."""
    return {
        name: hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()
        for name, value in env.items()
        if name.startswith(CREDENTIAL_PREFIXES) and name not in NOT_CREDENTIALS
    }


def _runtime() -> dict[str, str]:
    """What the head's workers run (the Python of `ray start`, Ray's version) and the auth mode
    this command expects: a command with others would not work on it."""
    return {
        "python": sys.executable,
        "ray": version("ray"),
        AUTH_MODE_ENV: os.environ.get(AUTH_MODE_ENV) or "token",
    }


def _differing(marker: dict) -> list[str]:
    """What differs here from the shared head: credential variables (by their salted digests),
    the Python, Ray's version, the auth mode."""
    here = _credential_digests(processes.environment(), marker["salt"])
    there = marker["credentials"]
    names = [name for name in here.keys() | there.keys() if here.get(name) != there.get(name)]
    runtime = _runtime()
    names += [name for name, value in runtime.items() if marker["runtime"].get(name) != value]
    return sorted(names)


MARKER_KEYS = {"pid", "started", "address", "dashboard", "auth", "runtime", "salt", "credentials"}


def _read(folder: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((folder / "head.json").read_text())
        return marker if isinstance(marker, dict) and MARKER_KEYS <= marker.keys() else None
    return None


def _current_cluster() -> Path:
    """Where `ray start` names the cluster that a bare `ray.init()` on this machine joins (in
    Ray's temporary folder: RAY_TMPDIR, TMPDIR or /tmp; `ray._common.utils`, Ray 2.60)."""
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir()) / "ray_current_cluster"


def _put_back_current_cluster(before: str | None, port: int) -> None:
    """Undo `ray start` naming the shared head the machine's current cluster (it does so just
    after its dashboard answers): the head is joined through this module only, never by a
    user's own `ray.init()` by surprise."""
    current = _current_cluster()

    def named() -> bool:
        return current.exists() and current.read_text().strip().endswith(f":{port}")

    if not processes.until(named, 10, 0.1):
        return
    if before is None:
        current.unlink(missing_ok=True)
    else:
        current.write_text(before)


@contextlib.contextmanager
def _exclusive(path: Path):
    """`path` locked exclusively while the block runs, waiting up to LOCK_TIMEOUT_S for another
    holder (InputError naming it after that: a command stopped with Ctrl-Z, say)."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(handle, 64, 0).decode(errors="replace").strip()
                    raise InputError(
                        f"{path} is held by process {holder or '?'} (a command starting or "
                        f"stopping the machine's local Ray) for over {LOCK_TIMEOUT_S} s; end "
                        "that process, or run this command with RAY_ADDRESS=local"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(handle)
