"""The training layer: one Ray Train run of AlexNet, from a plan to checkpoints.

- `config`: the `train` section (TrainConfig), the WorkerPlan handed to every worker, and
  TrainingSections (what training reads of an experiment's config);
- `launch`: plan a run against its data and cluster, fit its TorchTrainer;
- `transform`: the run's augmentation and normalisation (BatchTransform from the data's stats);
- `worker`: the loop every worker runs; `console`: its rank-0 progress;
- `checkpoints`: save, restore, find complete ones, read; `identity`: what makes two trainings
  the same one, checked before a run is resumed.
The MLflow run around a training is the experiments layer's; this layer only reports to it.
"""
