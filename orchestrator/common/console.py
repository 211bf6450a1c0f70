"""What the console shows of Ray: our own lines and the warnings that matter, not its chatter.

Set before Ray is imported (its log relay reads these once): lines that only narrate Ray's own
internals are dropped on the way to this console (`RAY_DEDUP_LOGS_SKIP_REGEX`, a documented Ray
setting), and the `(pid=...)` prefixes of relayed lines carry colour codes only on a terminal.
A user's own setting of either wins.
"""

from __future__ import annotations

import os
import sys

# Ray's chatter that says nothing to a user of this project (Ray 2.60):
RAY_NOISE = (
    # Ray Train's controller creates an actor with max_restarts and big arguments: an ERROR line
    # from the C++ core worker about spilling, in every run, that no setting of ours can avoid
    r"PreemptionWatcher.*max_restarts",
    # Ray Data's actors announce that progress bars are off: we turned them off (our own lines
    # and bar report progress)
    r"Progress bars disabled",
    # Ray Data's INFO lines about each dataset execution (every epoch), from actors of a cluster
    # that was not started with RAY_DATA_LOG_LEVEL=WARNING (a local Ray started by us is)
    r"Starting execution of Dataset|Execution plan of Dataset|Dataset \S+ execution finished",
)


def quiet_ray_console() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", "|".join(RAY_NOISE))
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI codes in a job log or a file
