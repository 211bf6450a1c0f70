"""A local Ray head with token auth and an MLflow server, both on 127.0.0.1; and their stop.

    [MLFLOW_BACKEND_STORE_URI=postgresql://...] python cluster/local.py start
        [--artifacts-destination s3://...] [--num-cpus N]
    python cluster/local.py stop
    python cluster/local.py env      # the exports again

`start` runs `ray start --head --block` and `mlflow server` as background processes it owns
(their pids and start times in the state folder), so `stop` ends exactly those two: never another
Ray on the machine (`ray stop` would end every one), nor a process that got one of their pids
after they exited. Jobs submitted to the head inherit `MLFLOW_TRACKING_URI`, so
`ray job submit ... -- python orchestrator/run.py ...` tracks into the head's server. While it
runs (in the default state folder), the project's commands started on this machine without
RAY_ADDRESS join it (orchestrator/common/local_ray.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from orchestrator.common import local_ray  # noqa: E402
from orchestrator.common.processes import (  # noqa: E402
    RAY_AGENT_PORT_OPTIONS,
    RAY_HEAD_ENV,
    answers,
    free_port,
    is_ours,
    start_time,
    terminate,
    tool,
    until,
)
from orchestrator.common.redact import redact_text  # noqa: E402

# (where the project's commands look for it: they join this head while it runs)
DEFAULT_STATE = str(
    Path(os.environ.get(local_ray.HOME_ENV) or local_ray.DEFAULT_HOME) / local_ray.LOCAL_HEAD_FOLDER
)


def _wait_for(
    url: str, process: subprocess.Popen, log: Path, timeout: float, secret: str = ""
) -> None:
    """Until `url` answers; if `process` exits first, its log's tail, `secret` and every
    credential masked (a password whose `@` is not encoded defeats the URI patterns)."""

    def up() -> bool:
        if process.poll() is not None:  # not retried: SystemExit
            tail = log.read_text(errors="replace")[-3000:]
            if secret:
                tail = tail.replace(secret, "***")
            raise SystemExit(
                f"it exited with {process.returncode}; its log {log}:\n{redact_text(tail)}"
            )
        return answers(url)

    if not until(up, timeout, 0.5):
        raise SystemExit(f"{url} did not answer within {timeout:g} s; see {log}")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _state_file(state: Path) -> Path:
    return state / "head.json"


def exports(head: dict) -> str:
    return "\n".join(
        [
            f"export RAY_ADDRESS=http://127.0.0.1:{head['dashboard_port']}   # for ray job submit; "
            f"a driver started directly joins with RAY_ADDRESS=127.0.0.1:{head['ray_port']}",
            "export RAY_AUTH_MODE=token   # the client side of token auth",
            f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{head['mlflow_port']}",
        ]
    )


BACKEND_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # SQLAlchemy's, as MLflow takes


def backend_store(args: argparse.Namespace, state: Path) -> str:
    """MLflow's store: MLFLOW_BACKEND_STORE_URI (the one place for a password), the
    --mlflow-backend URI (no password: a command line shows in `ps` and shell history), or
    sqlite in the state folder. SystemExit naming the problem for any other."""
    if args.mlflow_backend and urllib.parse.urlsplit(args.mlflow_backend).password is not None:
        raise SystemExit(
            "--mlflow-backend: the URI holds a password, which `ps` and the shell's history "
            "would show; put the URI in MLFLOW_BACKEND_STORE_URI instead"
        )
    backend = (
        args.mlflow_backend
        or os.environ.get("MLFLOW_BACKEND_STORE_URI")
        or f"sqlite:///{state / 'mlflow.db'}"
    )
    scheme = urllib.parse.urlsplit(backend).scheme.split("+")[0]
    if scheme not in BACKEND_SCHEMES:
        raise SystemExit(
            f"--mlflow-backend / MLFLOW_BACKEND_STORE_URI: got {redact_text(backend)!r}; "
            f"allowed: a {', '.join(BACKEND_SCHEMES)} URI, e.g. "
            "postgresql://user:password@host:5432/db"
        )
    return backend


def state_folder(path: str) -> Path:
    """The head's state folder (its pids, logs and sqlite store), for this user alone (0700)."""
    state = Path(path).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    return state


def start(args: argparse.Namespace) -> int:
    state = state_folder(args.state_dir)
    backend = backend_store(args, state)
    if _state_file(state).exists():
        head = json.loads(_state_file(state).read_text())
        started = head.get("started", {})
        if any(is_ours(pid, started.get(name)) for name, pid in head["pids"].items()):
            stop = f"python cluster/local.py stop --state-dir {state}"
            print(f"a local head is already running; stop it first: {stop}", file=sys.stderr)
            return 1
    artifacts = args.artifacts_destination or str(state / "mlartifacts")
    mlflow_uri = f"http://127.0.0.1:{args.mlflow_port}"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",  # the head and every client need the token
        "MLFLOW_TRACKING_URI": mlflow_uri,  # inherited by the drivers of submitted jobs
        # jobs' `python` is this environment's, with the project and its dependencies
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_BACKEND_STORE_URI", None)  # the database's password: MLflow's alone

    mlflow_log = state / "mlflow.log"
    mlflow_command = [
        tool("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.mlflow_port),
        "--artifacts-destination",
        artifacts,
        "--workers",
        str(args.mlflow_workers),
    ]
    mlflow = subprocess.Popen(
        mlflow_command,
        cwd=state,
        stdout=os.fdopen(os.open(mlflow_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a"),
        stderr=subprocess.STDOUT,
        # the store's URI (with its password) in the environment, not on a command line that
        # every user of the machine can list
        env={**env, "MLFLOW_BACKEND_STORE_URI": backend},
        start_new_session=True,
    )
    print(
        f"MLflow server starting on {mlflow_uri} (backend {redact_text(backend)}, "
        f"artifacts {redact_text(artifacts)}) ...",
        flush=True,
    )

    if not (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")):
        # A head started with token auth needs a token; make ~/.ray/auth_token once (kept out
        # of the output: it is the key to the cluster).
        subprocess.run(
            [tool("ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True
        )
    ray_log = state / "ray.log"
    ray_command = [
        tool("ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(args.ray_port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(args.dashboard_port),
    ]
    for option in RAY_AGENT_PORT_OPTIONS:  # Ray's fixed defaults clash with another Ray's
        ray_command += [option, str(free_port())]
    if args.num_cpus is not None:
        ray_command += ["--num-cpus", str(args.num_cpus)]
    if args.resources:
        ray_command += ["--resources", args.resources]
    ray_head = subprocess.Popen(
        ray_command,
        stdout=open(ray_log, "a"),  # noqa: SIM115 - the head keeps it
        stderr=subprocess.STDOUT,
        env={**env, **RAY_HEAD_ENV},  # (its stop: no drain of a node with nowhere to drain to)
        start_new_session=True,
    )
    print(f"Ray head starting on 127.0.0.1:{args.ray_port} (token auth) ...", flush=True)
    try:  # the two start side by side: the head is up in the time the slower one takes
        password = urllib.parse.urlsplit(backend).password or ""
        _wait_for(f"{mlflow_uri}/health", mlflow, mlflow_log, timeout=120, secret=password)
        _wait_for(f"http://127.0.0.1:{args.dashboard_port}/api/version", ray_head, ray_log, 120)
    except SystemExit:
        terminate({mlflow.pid: True, ray_head.pid: False})
        raise
    head = {
        "pids": {"ray": ray_head.pid, "mlflow": mlflow.pid},
        # what tells them from later processes given the same pids (`stop` checks it)
        "started": {"ray": start_time(ray_head.pid), "mlflow": start_time(mlflow.pid)},
        "ray_port": args.ray_port,
        "dashboard_port": args.dashboard_port,
        "mlflow_port": args.mlflow_port,
        "mlflow_backend": redact_text(backend),
        "mlflow_artifacts": redact_text(artifacts),
    }
    _state_file(state).write_text(json.dumps(head, indent=2))
    print(
        f"\nRay dashboard and job server: http://127.0.0.1:{args.dashboard_port} "
        f"(local only; token in ~/.ray/auth_token)"
    )
    print(f"MLflow UI: {mlflow_uri}\nLogs: {ray_log}, {mlflow_log}\n")
    print(exports(head))
    print(
        "\nthen, from the repository root:\n"
        "  ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \\\n"
        "      python orchestrator/run.py train --config configs/demo.yaml\n"
        f"stop with: python cluster/local.py stop"
        f"{'' if args.state_dir == DEFAULT_STATE else ' --state-dir ' + str(state)}"
    )
    return 0


def stop(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).expanduser().resolve()
    if not _state_file(state).exists():
        print(f"no local head recorded in {state}", file=sys.stderr)
        return 1
    head = json.loads(_state_file(state).read_text())
    started = head.get("started", {})
    ours = {name: pid for name, pid in head["pids"].items() if is_ours(pid, started.get(name))}
    terminate({pid: name == "mlflow" for name, pid in ours.items()})
    for name, pid in head["pids"].items():
        if name in ours:
            print(f"stopped {name} (pid {pid})")
        elif (now := start_time(pid)) is None:
            print(f"{name} (pid {pid}) had already exited")
        elif started.get(name) is None:
            print(
                f"not signalling pid {pid}: {state / 'head.json'} records no start time for "
                f"{name} (written by an older local.py), so pid {pid} cannot be told apart from "
                f"another process that got its number; if it is {name}, end it with "
                f"`kill {pid}`",
                file=sys.stderr,
            )
        else:
            print(
                f"not signalling pid {pid}: it is another process now (started "
                f"{_when(now)}, {name} started {_when(started[name])}); {name} had already "
                "exited and its pid was reused",
                file=sys.stderr,
            )
    # What `ray stop` also does: forget this head as the machine's current cluster, which a
    # later `ray.init()` would otherwise try to join.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.exists() and current.read_text().strip().endswith(f":{head['ray_port']}"):
        current.unlink()
    _state_file(state).unlink()
    return 0


def show_env(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).expanduser().resolve()
    if not _state_file(state).exists():
        print(f"no local head recorded in {state}", file=sys.stderr)
        return 1
    print(exports(json.loads(_state_file(state).read_text())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/local.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("start", "start the Ray head and the MLflow server"),
        ("stop", "stop the head and server that `start` started"),
        ("env", "print the exports for clients"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--state-dir",
            default=DEFAULT_STATE,
            help=f"pids, logs, sqlite store (default {DEFAULT_STATE})",
        )
        if name == "start":
            sub.add_argument("--ray-port", type=int, default=6379, help="the head's GCS port")
            sub.add_argument(
                "--dashboard-port", type=int, default=8265, help="dashboard and job server"
            )
            sub.add_argument("--mlflow-port", type=int, default=5000)
            sub.add_argument(
                "--mlflow-backend",
                default=None,
                help="MLflow's store: sqlite:///<state>/mlflow.db by default, or a URI without "
                "a password; a postgresql://user:password@host:port/db URI goes in "
                "MLFLOW_BACKEND_STORE_URI (command lines show in `ps`)",
            )
            sub.add_argument(
                "--artifacts-destination",
                default=None,
                help="where the server stores runs' artifacts: <state>/mlartifacts "
                "by default, or a bucket: s3://<bucket>/<prefix> (credentials and "
                "endpoint from the AWS variables)",
            )
            sub.add_argument("--mlflow-workers", type=int, default=1)
            sub.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use")
            sub.add_argument(
                "--resources", default=None, help="custom resources, JSON: '{\"preprocess\": 1}'"
            )
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "env": show_env}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
