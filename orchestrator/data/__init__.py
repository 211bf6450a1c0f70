"""The data layer: from a raw image tree to uint8 batches on a training worker's device.

- `config`: the `data` section (DataConfig); `prepare`: the `prepare` section and job
  (PrepareConfig, run_prepare), cutting `shards` in Ray Data tasks;
- `prepared`: a prepared dataset opened (PreparedData, its typed Manifest, ImageStats);
- `sources`: the data a run names, prepared first when it is raw (open_data);
- `shard_reader`: what a Ray Data read task runs (no torch); `streams`: the Ray Data streams;
- `feed`: a training worker's end of a stream, decoded where `data.decode` says;
- `capacity`: CPU cores a GPU node needs for its feed.
Below tracking and training: it knows nothing of MLflow or models.
"""
