"""Every YAML in cluster/ parses, has what its kind needs, keeps the secure defaults, and every
`orchestrator/run.py` command it (or cluster/README.md) runs exists with a config that loads."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator.config import REPO_ROOT, load_config
from orchestrator.run import COMMANDS

CLUSTER = REPO_ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def check_run_command(command: str) -> None:
    """`python orchestrator/run.py CMD [--config FILE] [--set k=v ...]`: CMD exists, the config
    loads with the overrides (paths as the cluster will see them are not checked)."""
    words = shlex.split(command.replace("\\\n", " "))
    start = words.index("orchestrator/run.py") + 1
    words = words[start:]
    name = words[0] if words and not words[0].startswith("-") else "demo"
    assert name in COMMANDS, f"{command!r}: no command {name!r}"
    if name in ("evaluate", "describe", "report"):
        return
    config, overrides, i = None, [], 1
    while i < len(words):
        if words[i] == "--config":
            config = REPO_ROOT / words[i + 1]
            assert config.is_file(), f"{command!r}: no config {config}"
            i += 2
        elif words[i] == "--set":
            overrides.append(words[i + 1])
            i += 2
        else:
            i += 1
    load_config(config, overrides)  # raises ConfigError on an unknown key or a bad value


def test_every_cluster_yaml_is_checked():
    names = {p.relative_to(CLUSTER).as_posix() for p in YAMLS}
    assert names == {"aws.yaml", "runtime_env.yaml", "kubernetes/rayjob-sweep.yaml",
                     "kubernetes/mlflow.yaml"}  # fmt: skip  # a new file needs its checks here


def test_aws_launcher_config():
    (config,) = _documents(CLUSTER / "aws.yaml")
    required = {"cluster_name", "provider", "auth", "available_node_types", "head_node_type"}
    required |= {"setup_commands", "head_start_ray_commands", "worker_start_ray_commands"}
    assert required <= set(config)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    trainers = [t for t in types.values() if "trainer" in t.get("resources", {})]
    preprocess = [t for t in types.values() if "preprocess" in t.get("resources", {})]
    assert trainers and preprocess
    for node_type in trainers + preprocess:
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
    assert trainers[0]["node_config"]["InstanceType"].startswith(("g5.12", "g6.12", "p"))
    assert any("pip install" in c and "alexnet-ray" in c for c in config["setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in command  # token auth on every node
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "." in config["file_mounts"].values()  # the project travels to every node
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)\w*=\S", (CLUSTER / "aws.yaml").read_text())


def test_runtime_env_leaves_data_and_environments_behind():
    (env,) = _documents(CLUSTER / "runtime_env.yaml")
    assert {".venv/", "data/", "mlflow.db", "mlartifacts/", "results/"} <= set(env["excludes"])


def test_kuberay_job_and_mlflow_server():
    (job,) = _documents(CLUSTER / "kubernetes" / "rayjob-sweep.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert "orchestrator/run.py sweep" in job["spec"]["entrypoint"]
    check_run_command(job["spec"]["entrypoint"])
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert "preprocess" in groups["cpu-preprocess"]["rayStartParams"]["resources"]
    gpu = groups["gpu-trainer"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "2"  # the paper's two towers

    documents = _documents(CLUSTER / "kubernetes" / "mlflow.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("StatefulSet", "mlflow-postgres"),
            ("Service", "mlflow-postgres")} <= kinds  # fmt: skip
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    service = by_name[("Service", "mlflow")]
    assert service["spec"]["type"] == "ClusterIP"  # not exposed outside the cluster
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "postgresql://" in container["args"][0] and "basic-auth" in container["args"][0]
    for variable in container["env"]:  # secrets come from Secrets, never literal values
        if re.search("PASSWORD|SECRET", variable["name"]):
            assert "secretKeyRef" in variable["valueFrom"], variable


def _readme_commands() -> list[str]:
    text = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    commands = []
    for language, block in blocks:
        if language not in ("bash", "sh", ""):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line for line in joined.splitlines() if "orchestrator/run.py" in line]
    return commands


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_commands_exist(command):
    check_run_command(command.split("#")[0])
