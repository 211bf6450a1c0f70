"""Where a command came from, as MLflow's own source tags (`mlflow.source.git.commit`,
`mlflow.source.name`, `mlflow.source.type`, `mlflow.user`, the branch), resolved once where the
command was typed and carried to every process that tracks a run.

MLflow's context providers resolve these from the process that creates the run: its user, its
`sys.argv[0]` and the git checkout around that file. Here a run is often created elsewhere: in a
Ray Tune trial's actor (whose argv is Ray's worker), or in a Ray job's driver on a cluster, whose
working directory is an upload without `.git`. So the command's first process resolves them the
way those providers do (the checkout is the one this package was loaded from, which also covers
the installed console command) and puts them in `SOURCE_ENV`; `submit` resolves them on the
submitting side and puts them in the job's environment; Ray Tune copies the variable into its
trials (`ray_cluster.carry_source_into_trials`). A process that finds it set uses it.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

SOURCE_ENV = "ALEXNET_RAY_SOURCE"  # JSON: {MLflow tag: value}
COMMIT = "mlflow.source.git.commit"
BRANCH = "mlflow.source.git.branch"
NAME = "mlflow.source.name"
TYPE = "mlflow.source.type"
USER = "mlflow.user"
DIRTY = "git_dirty"  # ours: "true" when tracked files differed from the commit

_CHECKOUT = Path(__file__).resolve().parents[2]


def command_source() -> dict[str, str]:
    """The source of the running command: the tags carried in `SOURCE_ENV`, else resolved here
    (and published to `SOURCE_ENV`, for the processes this one starts)."""
    carried = os.environ.get(SOURCE_ENV)
    if carried:
        try:
            return {str(k): str(v) for k, v in json.loads(carried).items()}
        except (ValueError, AttributeError):
            pass  # not ours: resolve again
    resolved = resolve_source(_main_file(), "LOCAL")
    os.environ[SOURCE_ENV] = json.dumps(resolved)
    return resolved


def resolve_source(entry: str, source_type: str) -> dict[str, str]:
    """The tags MLflow's default and git context providers would give a run created by `entry`
    from this checkout; without a checkout (an installed wheel, a job's upload) no git tags."""
    source = {NAME: entry, TYPE: source_type, USER: _user()}
    commit, branch, dirty = git_state(_CHECKOUT)
    if commit:
        source.update({COMMIT: commit, DIRTY: "true" if dirty else "false"})
        if branch:
            source[BRANCH] = branch
    return source


def git_state(root: Path) -> tuple[str | None, str | None, bool]:
    """(commit, branch or None when detached, whether tracked files differ) of the git checkout at
    `root`, or (None, None, False) when `root` is not one (a wheel keeps no pyproject.toml
    beside its packages; a checkout does)."""
    if not (root / "pyproject.toml").exists():
        return None, None, False
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, None, False  # a folder inside some other repository
        commit = _git(root, "rev-parse", "HEAD")
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None, False
    return commit, (None if branch == "HEAD" else branch), dirty


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def _main_file() -> str:
    """As MLflow's default context names a run's source: the program's argv[0]."""
    return sys.argv[0] if sys.argv and sys.argv[0] else "<console>"


def _user() -> str:
    """As MLflow's default context: the tracking server's user name when one is set, else the
    login name."""
    named = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if named:
        return named
    try:
        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "unknown"
