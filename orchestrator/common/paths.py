"""Where the project's own files are (no imports: `run.py --help` stays instant)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (absent from an installed wheel)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # shipped with the package
DEMO_CONFIG = CONFIGS / "demo.yaml"
SWEEP_CONFIG = CONFIGS / "sweep.yaml"
STUDY_CONFIG = CONFIGS / "paper-ablations.yaml"


def config_path(text: str) -> Path:
    """`--config`'s value: a file, else a shipped config named by its name
    (`sweep`), its file name (`sweep.yaml`) or its old place in the checkout
    (`configs/sweep.yaml`), so a command written for the checkout runs from anywhere. Anything
    else is returned as given, for the config loader to refuse by name."""
    path = Path(text)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    shipped = CONFIGS / name
    if shipped.is_file() and str(path.parent) in (".", "configs"):
        return shipped
    return path


def shipped_configs() -> list[str]:
    return sorted(path.stem for path in CONFIGS.glob("*.yaml"))
