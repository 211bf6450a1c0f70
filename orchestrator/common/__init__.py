"""Plumbing every layer uses, with no knowledge of AlexNet, MLflow or training:

- `errors`: ConfigError / InputError (input a user can fix: one line, exit 2), `shown`;
- `redact`: secrets masked in what is written down or printed;
- `storage`: local paths and filesystem URIs (s3://, gs://) behind one `Location`; output locks;
- `ray_cluster`: joining (or starting) Ray, its shape, and every reach into Ray's internals;
- `console`: what the console shows of Ray's own chatter (set before Ray is imported);
- `yaml_config`: YAML files and `--set` overrides -> validated frozen dataclasses, and back;
- `tables`, `plots`: rows as CSV or an aligned text table; matplotlib drawing to files;
- `paths`: where the project's own files are (the shipped configs, the checkout);
- `source`: where a command came from (commit, entry, user), as MLflow's source tags, carried
  into Ray Tune's trials and Ray jobs.
"""
