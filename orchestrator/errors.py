"""The one error type for input a user can fix: a config value, a path, a cluster too small."""


class ConfigError(ValueError):
    """The message names the field (or file), the value seen, and what is allowed."""


def check_custom_resources(name: str, resources: dict[str, float]) -> None:
    """Custom Ray resources in a config (`{trainer: 0.01}`): names other than CPU/GPU/memory
    (those have fields of their own), amounts > 0. Raises ValueError naming the field."""
    for key, amount in resources.items():
        if key in ("CPU", "GPU", "memory") or not amount > 0:
            raise ValueError(
                f"{name}.{key}: got {amount}; allowed: custom resource names (CPUs and GPUs have "
                "their own fields) with amounts > 0"
            )
