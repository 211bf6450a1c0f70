"""A trained model put to use: opened as a predictor from MLflow or a checkpoint (`model.py`),
served over HTTP by Ray Serve (`deployment.py`, `service.py`) and run over folders of images by
Ray Data (`batch.py`)."""
