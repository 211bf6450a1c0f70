"""Rows of results as text: CSV for artifacts, an aligned table for the console."""

from __future__ import annotations

import csv
import io


def csv_text(rows: list[dict], columns_when_empty: tuple[str, ...]) -> str:
    """`rows` (dicts with the same keys) as CSV with a header; with no rows, the header alone
    (`columns_when_empty`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(columns_when_empty))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def text_table(lines: list[list[str]]) -> str:
    """Cells in columns as wide as their widest cell, two spaces apart (the first line: the
    header)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )
