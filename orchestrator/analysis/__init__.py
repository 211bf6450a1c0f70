"""The analysis layer: a trained model, opened and put to use.

- `trained`: a model as `--model` names it (checkpoint, runs:/, models:/) with its config and
  data (Trained, open_trained); the one place a model is built from checkpoint weights;
- `evaluate`: top-1/top-5 error, centre crop and ten-crop;
- `scoring`: a pass over a dataset (predictions, fc7 neighbours, confusion), with Ray Data;
- `figures`: the paper's figures, drawn and logged to a run;
- `export`: the model as a servable module with its input example.
"""
