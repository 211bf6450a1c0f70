"""The experiment layer: every kind of MLflow-tracked run that trains.

- `training_run`: one training run under one MLflow run (`train`, and every trial);
- `trials`: a sweep's or a study's trial and its run's honest end (CloseTrialRuns);
- `tuning`: the Ray Tune plumbing both share (folders, parent run, CPU shares, the Tuner);
- `search`: a sweep's space, search algorithm and scheduler in Tune's terms;
- `sweep`, `sweep_results`: a sweep, its summary, best model and report;
- `study`, `ablations`: the paper's ablations over seeds and their table.
"""
