"""Plots drawn to files, never to a screen (runs have none: Ray workers, jobs, CI)."""

from __future__ import annotations


def pyplot():
    """matplotlib's pyplot on its file-only backend (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
