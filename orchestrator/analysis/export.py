"""A trained model made servable: one module with the run's evaluation view folded in (uint8
images at the prepared size in, logits out), with an input example and its output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from orchestrator.analysis.trained import Trained
from workloads.alexnet.export import Classifier


@dataclass(frozen=True)
class Servable:
    classifier: Classifier  # in eval mode
    example: np.ndarray  # uint8 (2, S, S, 3): the training set's mean image, twice
    output: np.ndarray  # the classifier's logits for `example`
    metadata: dict  # the prepared size and the class names, in label order


def servable(trained: Trained) -> Servable:
    config, data = trained.config, trained.data
    mean = config.data.mean_image(data.stats)
    classifier = Classifier(trained.model(), config.model.input_size, mean).eval()
    example = np.repeat(np.round(data.stats.mean_image * 255).astype(np.uint8)[None], 2, axis=0)
    with torch.no_grad():
        output = classifier(torch.from_numpy(example)).numpy()
    metadata = {"prepared_size": data.image_size, "classes": data.classes}
    return Servable(classifier, example, output, metadata)
