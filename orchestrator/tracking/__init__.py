"""The tracking layer: the only door to MLflow. Every write goes through `run.TrackedRun` (and
the Ray Train callback that logs epochs for it), so redaction, fail-fast and the outage buffer
cover all of them; every read returns this project's own records.

- `config`: the `tracking` section, the tracking URI; `client`: fail-fast, reachability;
- `metrics`: EpochMetrics and the metric names; `tags`: tag names and their typed values;
- `run`: TrackedRun (params, tags, metrics, datasets, artifacts, models, an honest status);
- `records`: RunRecord and Store (reads); `reads`: checkpoints behind runs:/ and models:/ URIs,
  a sweep's or a study's runs;
- `buffer`: values MLflow has not taken yet, on disk; `callback`: EpochLogger (Ray Train);
  `system_metrics`: a node's CPU, memory, GPU; `provenance`: commit, versions, cluster shape,
  environment; `steps`: the live step curves; `registry`: aliases that move only to a better
  version.
"""
