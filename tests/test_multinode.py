"""Several nodes (ray.cluster_utils.Cluster, on this machine): decoding only on preprocessing
nodes, training workers only on trainer nodes, as the config says; a trainer node lost
mid-training, and the run resumes on the other one from its checkpoint in the S3 bucket, where
its data is too: each node has its own Ray folder, and they share nothing but the S3 endpoint.
The worker trains the paper's two towers (both on the node's CPU here), so its checkpoints also
show the single-device layout."""

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from conftest import S3_BUCKET, free_port, load_into_plain_alexnet
from mlflow.tracking import MlflowClient

from orchestrator.data.shard_reader import read_shards

pytestmark = pytest.mark.ray
EPOCHS = 2  # epoch 1 on the node that is then removed; epoch 2 on the other one


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    dashboard = free_port()
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_port": dashboard,
            "dashboard_agent_listen_port": free_port(),
            # a node that stops answering is declared dead after 3 x 0.5 s (Ray: 5 x 3 s)
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    folders = []

    def node(role: str):
        # Ray's folder for the node's session (logs, spilled objects, runtime environments) is
        # its own: the nodes share no local storage, only the S3 endpoint
        folders.append(tempfile.mkdtemp(prefix="ray-node-"))
        return cluster.add_node(
            num_cpus=1,
            resources={role: 1},
            temp_dir=folders[-1],
            dashboard_agent_listen_port=free_port(),
        )

    nodes = {"preprocess": [node("preprocess")], "trainer": [node("trainer"), node("trainer")]}
    cluster.wait_for_nodes()
    cluster.dashboard_url = f"http://127.0.0.1:{dashboard}"
    cluster.roles, cluster.folders = nodes, folders
    yield cluster
    cluster.shutdown()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _alive_worker_node(cluster) -> str | None:
    from ray.util.state import list_actors

    actors = list_actors(
        address=cluster.dashboard_url,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    return actors[0].node_id if actors else None


def test_work_goes_where_the_config_says_and_survives_a_lost_trainer_node(
    cluster, tiny_prepared_s3, tmp_path, start_cli
):
    from ray.util.state import list_actors, list_tasks

    results = f"s3://{S3_BUCKET}/{tmp_path.name}/results"
    settings = [
        "data.source=prepared",
        f"data.root={tiny_prepared_s3}",
        "data.resources={preprocess: 0.01}",
        "data.decode=tasks",  # decoded where data.resources sends the read tasks
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.parallel=towers",
        "train.resources_per_worker={trainer: 0.01}",
        f"train.epochs={EPOCHS}",
        "train.global_batch_size=32",
        "train.log_every_n_steps=0",
        f"train.storage_path={results}",
        "name=multinode",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=multinode",
        "tracking.figures=false",  # made and checked in test_fault_tolerance.py
    ]
    args = ["train", "--config", "configs/demo.yaml"]
    args += [part for setting in settings for part in ("--set", setting)]
    log = tmp_path / "train.log"
    process = start_cli(*args, env={"RAY_ADDRESS": cluster.address}, log=log)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    deadline = time.monotonic() + 300
    while True:  # until epoch 1 is logged, then take away the node its worker runs on
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "epoch 1 was not logged within 300 s"
        try:
            runs = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])
        except Exception:  # noqa: BLE001 - the store or experiment may not exist yet
            runs = []
        if runs and client.get_metric_history(runs[0].info.run_id, "val_top1_error"):
            break
        time.sleep(0.5)
    victim_id = _alive_worker_node(cluster)
    trainers = {node.node_id: node for node in cluster.roles["trainer"]}
    assert victim_id in trainers  # the worker runs on a trainer node
    cluster.remove_node(trainers[victim_id], allow_graceful=False)

    assert process.wait(timeout=400) == 0, log.read_text()[-3000:]
    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])
    # the node that took over read the checkpoint back from the bucket
    checkpoints = re.escape(f"{results}/multinode/checkpoint_")
    resumed = rf"from the checkpoint of epoch \d \({checkpoints}"
    assert re.search(resumed, run.data.tags.get("restarts", "")), run.data.tags
    # what the workers printed stays in their nodes' own folders
    printed = "".join(
        path.read_text(errors="replace")
        for folder in cluster.folders
        for path in Path(folder).rglob("worker-*.out")
    )
    assert "towers split: tower 0 on cpu, tower 1 on cpu" in printed
    assert re.search("resumed " + resumed, printed)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1_error")]
    assert sorted(steps) == list(range(1, EPOCHS + 1))  # every epoch, once

    workers = list_actors(
        address=cluster.dashboard_url, detail=True, filters=[("class_name", "=", "RayTrainWorker")]
    )
    assert {w.node_id for w in workers} == set(trainers)  # first the victim, then the other one
    decodes = [
        t
        for t in list_tasks(address=cluster.dashboard_url, detail=True, limit=10_000)
        if read_shards.__name__ in (t.name or "")  # MapBatches(read_shards)
    ]
    assert decodes, "no decode tasks were recorded"
    preprocess = {node.node_id for node in cluster.roles["preprocess"]}
    assert {t.node_id for t in decodes} == preprocess
    assert run.data.params["train.parallel"] == "towers"
    assert run.data.tags["last_checkpoint"].startswith(f"{results}/multinode/checkpoint_")
    load_into_plain_alexnet(f"{results}/multinode")
