"""Shared fixtures: one Ray instance per test session, small generated datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.common.processes import RAY_HEAD_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent

# Ray Train's controller collects workers' reports when it polls them, every 2 s by default: a
# 2-epoch test training waits for up to 2 s at every report and at its end. Every Ray process of
# the session (the local heads and clusters the tests start included) inherits this.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# The session's Ray stands in for the machine's shared local Ray: it runs as that one does
os.environ.update(RAY_HEAD_ENV)


S3_BUCKET = "pytest"


@pytest.fixture(autouse=True)
def console_as_the_cli_sets_it():
    """The project's diagnostics as `run.py` prints them (stderr, level info), for the tests
    that call its functions in this process (without it pytest's log capture takes them)."""
    from orchestrator.common import logs

    logs.configure("info")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3 API on 127.0.0.1 (moto's server, in its own process) with the bucket `pytest`,
    and the standard AWS variables pointing at it in this process's environment: the commands
    the tests start, and every process of the Ray clusters started after it, inherit them, as
    every node of a cluster reading a MinIO bucket would. Yields the endpoint URL."""
    import time
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "w"),  # noqa: SIM115 - lives with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
            time.sleep(0.2)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "pytest-access-key",
            "AWS_SECRET_ACCESS_KEY": "pytest-secret-" + os.urandom(8).hex(),
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    import boto3  # what MLflow's S3 artifact store uses; it reads the same variables
    import pyarrow.fs as pafs

    from orchestrator.common.storage import filesystem

    boto3.client("s3").create_bucket(Bucket=S3_BUCKET)
    fs, path = filesystem(f"s3://{S3_BUCKET}")
    assert fs.get_file_info(path).type == pafs.FileType.Directory  # pyarrow finds it there too
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A PostgreSQL server on 127.0.0.1 (the binaries of the `pgserver` wheel) with password
    authentication and an empty database `mlflow`. Yields (URI with the password, password,
    data folder). Run as root, it runs as the user `pgserver` (PostgreSQL refuses root), which
    pgserver's helpers create."""
    import shutil

    from pgserver._commands import POSTGRES_BIN_PATH

    folder = tmp_path_factory.mktemp("postgres")
    data, password = folder / "data", "pg-pass-" + os.urandom(6).hex()
    (folder / "password").write_text(password + "\n")
    data.mkdir()
    user = None
    if os.geteuid() == 0:
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        user = ensure_user_exists("pgserver").pw_name
        for path in (folder, folder / "password", data):
            shutil.chown(path, user)
        ensure_prefix_permissions(data)  # the server's user can reach its folder

    def pg(program: str, *args: str) -> None:
        env = {**os.environ, "PGPASSWORD": password}
        done = subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            user=user,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{program}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    port = free_port()
    pg(
        "initdb",
        "-D",
        str(data),
        "-U",
        "mlflow",
        f"--pwfile={folder / 'password'}",
        "--auth=scram-sha-256",
        "--encoding=utf8",
    )
    pg(
        "pg_ctl",
        "-D",
        str(data),
        "-w",
        "-l",
        str(folder / "postgres.log"),
        "-o",
        f"-h 127.0.0.1 -p {port} -k {data}",
        "start",
    )
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow:{password}@127.0.0.1:{port}/mlflow", password, data
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "stop")


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A local Ray instance shared by every Ray-level test (ray.init costs seconds).

    Yields its address, so a test can run `orchestrator/run.py` in a subprocess on the same
    instance by setting RAY_ADDRESS. Started after `s3_server`: its processes reach the bucket.
    """
    import ray

    # The dashboard serves the State API, which Ray Train needs to free the CPUs of a trial
    # that Tune stopped (its PlacementGroupCleaner asks whether the controller is still alive).
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 5-class generated dataset in the train/<class>/, val/<class>/ layout (JPEG files)."""
    from workloads.datasets.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(num_classes=5, train_per_class=80, val_per_class=20, seed=7)
    return generate(tmp_path_factory.mktemp("data") / "synthetic", config), config


@pytest.fixture(scope="session")
def tiny_prepared(ray_cluster, tiny_dataset, tmp_path_factory) -> str:
    """`tiny_dataset` prepared into shards of 64 px images (JPEG); returns the folder."""
    from orchestrator.data.prepare import PrepareConfig, run_prepare

    root, _ = tiny_dataset
    out = tmp_path_factory.mktemp("prepared") / "tiny"
    run_prepare(PrepareConfig(root=str(root), out=str(out), image_size=64))
    return str(out)


@pytest.fixture(scope="session")
def tiny_prepared_s3(s3_server, tiny_prepared) -> str:
    """`tiny_prepared` copied into the S3 server's bucket; returns its `s3://` URI."""
    import pyarrow.fs as pafs

    from orchestrator.common.storage import filesystem

    uri = f"s3://{S3_BUCKET}/prepared/tiny"
    fs, path = filesystem(uri)
    pafs.copy_files(
        tiny_prepared, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    return uri


@pytest.fixture
def tiny_train_args(tiny_dataset, tiny_prepared, tmp_path):
    """`run.py train` arguments: the demo config on `tiny_dataset`, everything under tmp_path
    (MLflow in tmp_path/mlflow.db), batch 32, plus the given `key=value` overrides.

    The raw source is the generated tree, as in the demo; its preparation with the demo's
    parameters is `tiny_prepared`, made once per session (a test that needs the prepare step
    itself overrides `data.prepared_root`)."""
    root, synthetic = tiny_dataset

    def args(*overrides: str) -> list[str]:
        settings = [
            f"data.root={root}",
            f"data.prepared_root={tiny_prepared}",
            f"data.synthetic.num_classes={synthetic.num_classes}",
            f"data.synthetic.train_per_class={synthetic.train_per_class}",
            f"data.synthetic.val_per_class={synthetic.val_per_class}",
            f"data.synthetic.seed={synthetic.seed}",
            f"train.storage_path={tmp_path / 'results'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.buffer_dir={tmp_path / 'mlflow-buffer'}",
            "train.global_batch_size=32",
            *overrides,
        ]
        return ["train", "--config", "configs/demo.yaml"] + [
            part for setting in settings for part in ("--set", setting)
        ]

    return args


@pytest.fixture
def run_cli():
    """Runs `python orchestrator/run.py ARGS` as a plain script, as a user would."""

    def run(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = REPO_ROOT):
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / "orchestrator" / "run.py"), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


# Python with SIGINT and SIGQUIT at their default actions, as a terminal's shell starts a
# command. This process ignores both now and then for a moment: a child started in one (a
# `serve`, seen twice in a full run) began with both ignored (its /proc/PID/status SigIgn), so
# its Python installed no Ctrl-C handler and it never stopped. (Ignoring SIGINT and SIGQUIT for
# the time it runs is what C's system() does, in whichever thread of a library calls it; this
# process also had SIGQUIT ignored for good by then.)
WITH_DEFAULT_SIGNALS = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGQUIT): signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
]


@pytest.fixture
def start_cli():
    """Starts `python orchestrator/run.py ARGS` in its own process group (to kill it whole), with
    Ctrl-C's default action (`WITH_DEFAULT_SIGNALS`): the tests that send it SIGINT rely on it."""
    started = []

    def start(*args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with it
        process = subprocess.Popen(
            [*WITH_DEFAULT_SIGNALS, str(REPO_ROOT / "orchestrator" / "run.py"), *args],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()


def wait_for(process, condition, what: str, timeout: float = 300):
    """Polls `condition()` until it returns something true (returned), while `process` runs."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {what}"
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


def experiment_args(command: str, config: str, prepared: str, tmp_path, *overrides) -> list:
    """`run.py COMMAND --config CONFIG` on the prepared data `prepared`, MLflow and storage
    under tmp_path, a small model at batch 32, plus `key=value` overrides."""
    settings = [
        "data.source=prepared",
        f"data.root={prepared}",
        f"train.storage_path={tmp_path / 'results'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.buffer_dir={tmp_path / 'buffer'}",
        "tracking.figures=false",
        "train.global_batch_size=32",
        "model.width=0.125",
        *overrides,
    ]
    return [command, "--config", config] + [p for s in settings for p in ("--set", s)]


def experiment_runs(client, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) in `experiment`, as MLflow holds them now."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    kinds = [run.data.tags.get("kind") for run in runs]
    return (
        [r for r, k in zip(runs, kinds) if k in ("sweep", "study")],
        [r for r, k in zip(runs, kinds) if k == "trial"],
    )


def interrupt_after_an_epoch(start_cli, args, env, tmp_path, experiment):
    """Starts `args` (a sweep or study command), sends its driver SIGINT once a trial has
    logged its first epoch, and checks what the interrupted command left: exit 130 and no
    traceback, the parent and the trial KILLED, no summary, no registered model. Returns the
    MlflowClient and the interrupted driver's console output."""
    import signal

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def a_trial_logged_an_epoch():
        _, trials = experiment_runs(client, experiment)
        return any(client.get_metric_history(t.info.run_id, "val_top1_error") for t in trials)

    log = tmp_path / "interrupted.log"
    driver = start_cli(*args, env=env, log=log)
    wait_for(driver, a_trial_logged_an_epoch, "a trial's first epoch in MLflow", timeout=400)
    driver.send_signal(signal.SIGINT)  # as Ctrl-C in its terminal
    assert driver.wait(timeout=180) == 130, log.read_text()[-4000:]
    printed = log.read_text()
    assert "interrupted with 0 of its 1 trials finished: nothing summarised" in printed
    # (lines Ray relays from its actors start with "(Actor pid=...)": Ray's own cleanup may
    # print one there; the driver prints none)
    assert not [line for line in printed.splitlines() if line.startswith("Traceback")]
    (parent,), (trial,) = experiment_runs(client, experiment)
    assert parent.info.status == "KILLED" and trial.info.status == "KILLED"
    kept = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert kept == ["config.yaml", "console.log", "environment.txt"]  # no table, no plots
    assert client.search_model_versions() == []
    return client, printed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts) that a test can
    stop and start again on the same port."""

    def __init__(self, folder: Path, basic_auth_password: str | None = None):
        self.folder = folder
        self.basic_auth_password = basic_auth_password  # the admin's; None: no auth
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        import time
        import urllib.request

        log = open(self.folder / "server.log", "a")  # noqa: SIM115 - lives with the process
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--workers", "1"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        env = dict(os.environ)
        if self.basic_auth_password is not None:
            command += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.basic_auth_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-secret-key-" + str(self.port)
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,  # where a basic-auth server keeps its basic_auth.db
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer within {timeout} s")

    def stop(self) -> None:
        """Gone at once, as a crash or a lost machine would take it (a SIGTERM'd server under
        load took ~20 s to exit: its job runner waits); sqlite keeps what it committed."""
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


def load_into_plain_alexnet(run_folder: Path | str) -> None:
    """Every checkpoint of a run (a folder or a URI) holds single-device weights, whatever the
    run's placement: they load strictly into a plain AlexNet built from the checkpoint's own
    config."""
    import io

    import torch
    import yaml

    from orchestrator.common.storage import Location
    from workloads.alexnet.model import ModelConfig, build_model

    run = Location.of(str(run_folder))
    names = [name for name in run.names() if name.startswith("checkpoint_")]
    names = [name for name in names if run.exists(name, "checkpoint.pt")]
    assert names, f"no checkpoint in {run_folder}"
    for name in names:
        state = torch.load(io.BytesIO(run.read_bytes(name, "checkpoint.pt")), weights_only=True)
        model = build_model(ModelConfig(**yaml.safe_load(state["config"])["model"]))
        model.load_state_dict(state["model"], strict=True)
