"""The MLflow pyfunc model every finished run logs (MLflow's "models from code": this file is
copied into the model and run at load time; nothing is unpickled). It loads the run's predictor
(workloads/alexnet/predictor.py, shipped inside the model as code) from the model's `predictor`
artifact. Imports nothing from `orchestrator`, so `mlflow models serve` and
`mlflow.pyfunc.load_model` need only the model's pinned requirements.

Input: a DataFrame whose `image` column holds encoded images (JPEG, PNG, ... bytes; base64 in
JSON), or a uint8 array (N, H, W, 3). Output: a DataFrame of `labels` (the top-k class names)
and `probabilities`, one row per image.
"""

import mlflow
import numpy as np
import pandas as pd

from workloads.alexnet.predictor import INPUT_COLUMN, Predictor


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.predictor = Predictor.load(context.artifacts["predictor"])  # models.PREDICTOR_ARTIFACT

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            items = list(model_input)
        else:
            items = list(pd.DataFrame(model_input)[INPUT_COLUMN])
        images = np.stack([self.predictor.image(item) for item in items])
        labels, probabilities = self.predictor.top(images)
        return pd.DataFrame({"labels": labels, "probabilities": [list(p) for p in probabilities]})


mlflow.models.set_model(ImageClassifier())
