"""MLflow's runs read back as this project's own records: `RunRecord` (a run's params, last
metrics and typed tags) and `Store` (histories, nested runs, artifacts). Nothing above the
tracking package sees an MLflow object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.tracking import tags
from orchestrator.tracking.metrics import EPOCHS_METRIC


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as the store holds it."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    experiment_id: str
    artifact_uri: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the last value of each
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run) -> RunRecord:
        """The record of an MLflow `Run` entity."""
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            name=info.run_name,
            status=info.status,
            experiment_id=info.experiment_id,
            artifact_uri=info.artifact_uri,
            params=dict(data.params),
            metrics=dict(data.metrics),
            tags=dict(data.tags),
        )

    @property
    def kind(self) -> str | None:
        return self.tags.get(tags.KIND)

    @property
    def trial_id(self) -> str | None:
        return self.tags.get(tags.TRIAL_ID)

    @property
    def group(self) -> str | None:
        """A study trial's group (its baseline or ablation)."""
        return self.tags.get(tags.GROUP)

    @property
    def seed_index(self) -> int:
        return int(self.tags[tags.SEED_INDEX])

    @property
    def early_stopped(self) -> bool:
        return self.tags.get(tags.EARLY_STOPPED) == "true"

    @property
    def last_checkpoint(self) -> tuple[str | None, int]:
        """(path or URI, epoch) of the last checkpoint the run recorded; (None, 0): none."""
        return tags.read_last_checkpoint(self.tags)

    @property
    def restarts(self) -> tuple[str, ...]:
        return tags.read_restarts(self.tags)

    @property
    def training_fields(self) -> dict | None:
        """The fields that define its training (training/identity.py), if it recorded them."""
        return tags.read_training_fields(self.tags)


class Store:
    """Reads of one tracking store (through an MLflow client)."""

    def __init__(self, client):
        self._client = client

    def run(self, run_id: str) -> RunRecord:
        return RunRecord.of(self._client.get_run(run_id))

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every value of metric `key` the run logged."""
        return [(m.step, m.value) for m in self._client.get_metric_history(run_id, key)]

    def logged_epochs(self, run_id: str) -> set[int]:
        """The epochs whose metrics the run holds."""
        return {step for step, _ in self.history(run_id, EPOCHS_METRIC)}

    def last_epoch(self, run_id: str) -> int:
        """The last epoch the run logged (0: none): how far its training got."""
        return max(self.logged_epochs(run_id), default=0)

    def named(self, experiment_id: str, name: str) -> list[RunRecord]:
        """The runs of the experiment that carry the run name `name` (their run-key tag)."""
        return self.search([experiment_id], f"tags.`{tags.RUN_KEY}` = '{name}'")

    def search(self, experiment_ids: list[str], filter_string: str) -> list[RunRecord]:
        found = self._client.search_runs(experiment_ids, filter_string=filter_string)
        return [RunRecord.of(run) for run in found]

    def children(self, parent: RunRecord) -> list[RunRecord]:
        """The runs nested under `parent` (a sweep's or a study's trials)."""
        nested = f"tags.`{tags.PARENT_RUN_ID}` = '{parent.run_id}'"
        return self.search([parent.experiment_id], nested)

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self._client.search_experiments()]

    def artifact_uris(self, run: RunRecord, folder: str) -> list[str]:
        """The URIs of the run's artifacts in `folder`."""
        listed = self._client.list_artifacts(run.run_id, folder)
        return [f"{run.artifact_uri}/{artifact.path}" for artifact in listed]

    def read_text(self, run_id: str, path: str) -> str:
        """A text artifact of the run (e.g. its config.yaml)."""
        return Path(self._client.download_artifacts(run_id, path)).read_text()
