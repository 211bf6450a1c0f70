"""Every YAML in cluster/ parses, has what its kind needs, keeps the secure defaults, and every
`orchestrator/run.py` command it (or cluster/README.md) runs exists with a config that loads.

The secure defaults: the MLflow admin password reaches the MLflow server alone, jobs log in as
the non-admin user `mlflow-jobs`; every Kubernetes container runs as a non-root user without
privilege escalation or capabilities, with resource requests and limits and a pinned image; the
image of cluster/Dockerfile runs as a non-root user and pins every dependency."""

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.common.paths import REPO_ROOT, config_path
from orchestrator.config.experiment import load_config
from orchestrator.run import COMMANDS

CLUSTER = REPO_ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
KUBERNETES = sorted((CLUSTER / "kubernetes").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
ADMIN_SECRETS = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
JOBS_USER = "mlflow-jobs"


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
            config = config_path(words[i + 1])  # as run.py resolves it (shipped by name)
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
    # a new file needs its checks here
    assert names == {
        "aws.yaml",
        "runtime_env.yaml",
        "kubernetes/rayjob-sweep.yaml",
        "kubernetes/mlflow.yaml",
    }


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
    # no literal secret: values come from files or SSM ("$(...)", "$variable")
    text = (CLUSTER / "aws.yaml").read_text()
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)\w*=(?!\"?\$)\S", text)


def test_aws_admin_password_reaches_the_mlflow_server_alone():
    (config,) = _documents(CLUSTER / "aws.yaml")
    (server,) = [c for c in config["head_setup_commands"] if "mlflow server" in c]
    for secret in ADMIN_SECRETS:  # read from SSM into the server's environment, nowhere else
        assert f'{secret}="$' in server
    assert "aws ssm get-parameter" in server and "--with-decryption" in server
    assert "export" not in server and "set -a" not in server
    rest = {
        **config,
        "head_setup_commands": [c for c in config["head_setup_commands"] if c != server],
    }
    everything_else = json.dumps(rest)  # every node's setup, Ray's environment, file mounts
    for secret in ADMIN_SECRETS + ("mlflow.env", "admin"):
        assert secret not in everything_else, secret
    assert [v for v in config["file_mounts"].values() if "mlflow" in v] == [
        "~/.config/alexnet-ray/mlflow-jobs.password"
    ]


def test_aws_jobs_log_in_as_the_non_admin_user():
    (config,) = _documents(CLUSTER / "aws.yaml")
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in starts if "ray start" in c]
    assert len(starts) == 2
    for command in starts:  # jobs inherit the environment of `ray start`
        assert f"MLFLOW_TRACKING_USERNAME={JOBS_USER};" in command
        assert 'MLFLOW_TRACKING_PASSWORD="$(cat ~/mlflow-jobs.password)"' in command


def test_runtime_env_leaves_data_and_environments_behind():
    (env,) = _documents(CLUSTER / "runtime_env.yaml")
    assert {".venv/", "data/", "mlflow.db", "mlartifacts/", "results/"} <= set(env["excludes"])
    # a job's processes get the allocator settings a local Ray's processes inherit
    from orchestrator.common.ray_cluster import ALLOCATOR_ENV

    assert ALLOCATOR_ENV.items() <= env["env_vars"].items()


def test_kuberay_job_and_mlflow_server():
    (job,) = _documents(CLUSTER / "kubernetes" / "rayjob-sweep.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert "orchestrator/run.py sweep" in job["spec"]["entrypoint"]
    check_run_command(job["spec"]["entrypoint"])
    from orchestrator.common.ray_cluster import ALLOCATOR_ENV

    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert ALLOCATOR_ENV.items() <= runtime_env["env_vars"].items()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert "preprocess" in groups["cpu-preprocess"]["rayStartParams"]["resources"]
    gpu = groups["gpu-trainer"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "2"  # the paper's two towers

    documents = _documents(CLUSTER / "kubernetes" / "mlflow.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "mlflow-postgres"),
        ("Service", "mlflow-postgres"),
    } <= kinds
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    service = by_name[("Service", "mlflow")]
    assert service["spec"]["type"] == "ClusterIP"  # not exposed outside the cluster
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "postgresql://" in container["args"][0] and "basic-auth" in container["args"][0]
    for variable in container["env"]:  # secrets come from Secrets, never literal values
        if re.search("PASSWORD|SECRET", variable["name"]):
            assert "secretKeyRef" in variable["valueFrom"], variable
    # the user store (mlflow-jobs and its permissions) outlives the pod: on a persistent volume
    ini = by_name[("ConfigMap", "mlflow-basic-auth")]["data"]["basic_auth.ini"]
    (auth_db,) = re.findall(r"database_uri = sqlite:///(\S+)", ini)
    pod = deployment["spec"]["template"]["spec"]
    claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert any(
        auth_db.startswith(m["mountPath"] + "/") and m["name"] in claims
        for m in container["volumeMounts"]
    )
    assert {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/etc/mlflow/basic_auth.ini"} in (
        container["env"]
    )


def _pod_specs(node) -> list[dict]:
    """Every pod spec in a manifest (a mapping with `containers`), however deeply nested."""
    if isinstance(node, list):
        return [spec for item in node for spec in _pod_specs(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if "containers" in node else []
    return found + [spec for value in node.values() for spec in _pod_specs(value)]


def _containers(path: Path) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container and init container in a manifest."""
    return [
        (pod, container)
        for document in _documents(path)
        for pod in _pod_specs(document)
        for container in pod["containers"] + pod.get("initContainers", [])
    ]


def test_kubernetes_manifests_have_every_container():
    counts = {path.name: len(_containers(path)) for path in KUBERNETES}
    # postgres + mlflow; the RayJob's submitter, head and two worker groups
    assert counts == {"mlflow.yaml": 2, "rayjob-sweep.yaml": 4}


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_containers_run_unprivileged_with_limits(path):
    for pod, container in _containers(path):
        name = container["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["fsGroup"] > 0, name  # volumes writable by the pod's group
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert isinstance(context["readOnlyRootFilesystem"], bool), name  # a choice, made
        if context["readOnlyRootFilesystem"]:
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
        else:  # only Ray's own containers write into their image
            assert name in ("ray-head", "ray-worker"), name
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (name, kind)
        if "nvidia.com/gpu" in resources["requests"]:
            assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]


def _image_tag(image: str) -> str | None:
    """The tag of `image` (`registry:5000/name:tag`), None when it has none."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]  # a digest pins it too
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_images_are_pinned(path):
    for _, container in _containers(path):
        image = container["image"]
        tag = _image_tag(image)
        assert tag and tag != "latest", image
        if image.split(":")[0].endswith(("alexnet-ray", "alexnet-ray-gpu")):  # cluster/Dockerfile
            assert tag == PYPROJECT["version"], image
    assert ":latest" not in (CLUSTER / "README.md").read_text()


def test_kubernetes_jobs_log_in_as_the_non_admin_user():
    (job,) = _documents(CLUSTER / "kubernetes" / "rayjob-sweep.yaml")
    assert "mlflow-auth" not in json.dumps(job) and "ADMIN" not in json.dumps(job)
    tracked = 0
    for _, container in _containers(CLUSTER / "kubernetes" / "rayjob-sweep.yaml"):
        env = {v["name"]: v for v in container.get("env", [])}
        if "MLFLOW_TRACKING_URI" not in env:
            continue
        tracked += 1
        for variable, key in (
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
        ):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": JOBS_USER, "key": key}
    assert tracked == 3  # the head and both worker groups
    # the admin password: only the MLflow server's container
    server = _containers(CLUSTER / "kubernetes" / "mlflow.yaml")
    holders = [
        container["name"]
        for _, container in server
        if "MLFLOW_AUTH_ADMIN_PASSWORD" in json.dumps(container.get("env", []))
    ]
    assert holders == ["mlflow"]


def test_kubernetes_data_results_and_artifacts_are_in_one_bucket():
    """As the tests ran them (test_cluster.py, test_fault_tolerance.py): the shards, the trials'
    checkpoints and the sweep's state, and MLflow's artifacts in a bucket, which every Ray pod
    and the MLflow server reach with the same optional Secret."""
    (job,) = _documents(CLUSTER / "kubernetes" / "rayjob-sweep.yaml")
    settings = dict(re.findall(r"--set (\S+?)=(\S+)", job["spec"]["entrypoint"]))
    buckets = {settings["data.root"].split("/")[2], settings["train.storage_path"].split("/")[2]}
    (deployment,) = [
        d for d in _documents(CLUSTER / "kubernetes" / "mlflow.yaml") if d["kind"] == "Deployment"
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"][0]
    (artifacts,) = re.findall(r"--artifacts-destination (\S+)", args)
    assert {settings["data.root"][:5], settings["train.storage_path"][:5], artifacts[:5]} == {
        "s3://"
    }
    assert buckets == {artifacts.split("/")[2]}
    for path in KUBERNETES:
        for _, container in _containers(path):
            env = {v["name"]: v for v in container.get("env", [])}
            if container["name"] in ("ray-head", "ray-worker", "mlflow"):
                assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
                    "name": "aws-credentials",
                    "key": "secret-access-key",
                    "optional": True,
                }
            for name, variable in env.items():  # credentials never as literal values
                if re.search("PASSWORD|SECRET|KEY_ID", name):
                    assert "secretKeyRef" in variable["valueFrom"], (path.name, variable)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of cluster/Dockerfile, continuation lines joined."""
    lines = [
        line
        for line in (CLUSTER / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in joined.splitlines()
        if line.strip()
    ]


def test_dockerfile_runs_as_a_non_root_user():
    users = [arguments.strip() for name, arguments in _dockerfile_instructions() if name == "USER"]
    assert users, "no USER: the image would run as its base image's user"
    uid = re.fullmatch(r"(\d+)(:\d+)?", users[-1])
    assert uid and int(uid.group(1)) > 0, f"USER {users[-1]}: a numeric, non-root uid"
    (base,) = [a for n, a in _dockerfile_instructions() if n == "ARG" and a.startswith("BASE=")]
    assert _image_tag(base.removeprefix("BASE=")) not in (None, "latest"), base


def test_dockerfile_pins_every_dependency_as_pyproject_allows():
    pins = {}
    for name, arguments in _dockerfile_instructions():
        assert not re.search(r"PASSWORD|SECRET|TOKEN|auth_token|\.env\b", arguments), arguments
        if name != "RUN" or "pip install" not in arguments:
            continue
        words = shlex.split(arguments)
        for word in words[words.index("install") + 1 :]:
            if word.startswith("-"):
                continue
            if word == ".":  # the project itself: with its dependencies pinned here, not resolved
                assert "--no-deps" in words, arguments
                continue
            requirement = Requirement(word)
            specifiers = list(requirement.specifier)
            assert [s.operator for s in specifiers] == ["=="], f"{word}: pin it with =="
            pins[canonicalize_name(requirement.name)] = (requirement, specifiers[0].version)
    for dependency in map(Requirement, PYPROJECT["dependencies"]):
        assert canonicalize_name(dependency.name) in pins, f"{dependency}: not pinned"
        pinned, version = pins[canonicalize_name(dependency.name)]
        assert dependency.specifier.contains(version), (str(dependency), version)
        assert dependency.extras <= pinned.extras, (str(dependency), str(pinned))


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
