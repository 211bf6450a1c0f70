"""The error types for input a user can fix: a config value, a path, a file, a cluster too small.

`orchestrator/run.py` prints them as one line (`config error: ...` / `error: ...`) and exits 2,
without a traceback.
"""

import reprlib

_SHOWN = reprlib.Repr()  # Python 3.11's takes no arguments
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxlevel = 80, 80, 6, 6, 3
MAX_MESSAGE_CHARS = 1000  # a message is one readable line, whatever a user passed in


class ConfigError(ValueError):
    """The message names the field (or file), the value seen, and what is allowed."""

    prefix = "config error"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) ended the work before it finished: `orchestrator/run.py` prints the
    message (what was kept and how to continue) and exits 130, as a shell does."""


class InputError(ConfigError):
    """Not a config field but something the user pointed at: a file, a model URI, a folder."""

    prefix = "error"


def shown(value) -> str:
    """`value` for an error message: its repr, cut short (a YAML alias bomb prints in bytes)."""
    return _SHOWN.repr(value)


def check_custom_resources(name: str, resources: dict[str, float]) -> None:
    """Custom Ray resources in a config (`{trainer: 0.01}`): names other than CPU/GPU/memory
    (those have fields of their own), amounts > 0. Raises ValueError naming the field."""
    for key, amount in resources.items():
        if key in ("CPU", "GPU", "memory") or not amount > 0:
            raise ValueError(
                f"{name}.{key}: got {amount}; allowed: custom resource names (CPUs and GPUs have "
                "their own fields) with amounts > 0"
            )
