"""The project as a user installs it: a wheel (not the editable checkout) in a fresh virtual
environment outside the checkout, its console command run from another directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from orchestrator.common.paths import REPO_ROOT


def _run(*command, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_wheel_installs_a_console_command_that_runs_anywhere(tmp_path):
    """`alexnet-ray --version`, `describe`, `config` and `config --fields` from a wheel in a
    fresh venv, run in an empty directory. (The venv reaches this environment's dependencies
    through a .pth line, as `pip install` would have fetched them; the project itself comes from
    the wheel only: a .pth line's folder runs no .pth of its own, so the checkout's editable
    finder is not among them.)"""
    tracked = _run("git", "-C", str(REPO_ROOT), "ls-files", "-z").stdout.split("\0")[:-1]
    source = tmp_path / "source"  # the checkout's files alone: no build/ left from elsewhere
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
        str(source),
    )
    (wheel,) = (tmp_path / "dist").glob("alexnet_ray-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    site = Path(
        _run(
            str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--no-deps",
        "-q",
        str(wheel),
    )
    command, elsewhere = str(venv / "bin" / "alexnet-ray"), tmp_path / "elsewhere"
    elsewhere.mkdir()

    version = _run(command, "--version", cwd=elsewhere).stdout
    assert version.startswith("alexnet-ray 0.1.0 (no git checkout); ray 2.60.0, torch ")
    located = _run(
        str(venv / "bin" / "python"),
        "-c",
        "import orchestrator; print(orchestrator.__file__)",
        cwd=elsewhere,
    )
    assert located.stdout.startswith(str(site))  # the wheel's copy, not the checkout
    described = _run(command, "describe", "--set", "model.variant=paper", cwd=elsewhere).stdout
    assert "60,965,224" in described
    shown = _run(command, "config", "--set", "optim.lr=.02", cwd=elsewhere).stdout
    assert "lr: 0.02" in shown and "epochs: 90" in shown
    # the shipped configs come with the wheel: by name, or by their place in a checkout
    swept = _run(command, "config", "--config", "configs/sweep.yaml", cwd=elsewhere).stdout
    assert "num_samples: 8" in swept and "width: 0.25" in swept
    assert _run(command, "config", "--config", "sweep", cwd=elsewhere).stdout == swept
    fields = _run(command, "config", "--fields", cwd=elsewhere).stdout
    assert "train.resume_unrecorded\n  allowed: true/false (on/off)\n" in fields
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing written where it ran


def test_shell_completion_offers_the_commands_their_options_and_every_config_key(tmp_path):
    """argcomplete, as `eval "$(register-python-argcomplete alexnet-ray)"` wires it into bash:
    the shell's line in COMP_LINE, the candidates back in a file."""
    command = str(Path(sys.executable).parent / "alexnet-ray")

    def candidates(line: str) -> list[str]:
        out = tmp_path / "candidates"
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        }
        subprocess.run([command], env=env, timeout=60, check=True, cwd=tmp_path)
        return sorted(out.read_text().split("\v"))

    assert candidates("alexnet-ray sw") == ["sweep "]
    assert candidates("alexnet-ray train --d") == ["--dry-run "]
    keys = candidates("alexnet-ray sweep --set optim.")
    assert {"optim.lr=", "optim.weight_decay=", "optim.schedule.kind="} <= set(keys)
    assert all(key.startswith("optim.") and key.endswith("=") for key in keys)
    assert candidates("alexnet-ray train --set model.dro") == ["model.dropout="]
