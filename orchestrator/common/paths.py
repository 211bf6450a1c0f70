"""Where the repository's own files are (no imports: `run.py --help` stays instant)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
SWEEP_CONFIG = REPO_ROOT / "configs" / "sweep.yaml"
STUDY_CONFIG = REPO_ROOT / "configs" / "paper-ablations.yaml"
