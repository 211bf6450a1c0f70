"""The experiment config: `experiment.ExperimentConfig` composes every component's section (model,
data, prepare, optim, train, tracking) with the sweep's (`sweep.SweepConfig`) and the study's
(`study.StudyConfig`), loaded from YAML with overrides (`load_config`) and validated before any
cluster work. Above training: a training receives its sections, never this package.
"""
