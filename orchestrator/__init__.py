"""AlexNet on Ray: the orchestrator, in layers (docs/architecture.md). Each package imports only
from the packages before it in this order, and from `workloads/` (tests/test_layers.py):

    common -> data -> tracking -> training -> config -> analysis -> experiments -> commands

`run.py` is the command line (and the `ray job submit` entrypoint). No package re-exports
anything: importing one costs only what its own modules import.
"""
