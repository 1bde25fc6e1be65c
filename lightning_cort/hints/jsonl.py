"""Reading traces and writing records as JSON Lines, with errors that name the line and what is wrong."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["read_jsonl", "read_traces", "write_jsonl"]

#: The columns a trace row needs: the problem, its gold answer, and the assistant text after the generation prompt.
TRACE_COLUMNS = ("problem", "answer", "trace")


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a ``.jsonl`` file with their line numbers (blank lines skipped).

    Raises:
        ValueError: Lines that are not JSON objects, all listed with their line numbers.
    """
    rows, errors = scan_jsonl(path)
    report_malformed(path, errors)
    return rows


def report_malformed(path: str | Path, errors: list[tuple[int, str]]) -> None:
    """Raise one ``ValueError`` listing every ``(line number, problem)`` of ``path`` in line order, if any."""
    if errors:
        listed = "; ".join(f"line {number}: {problem}" for number, problem in sorted(errors))
        raise ValueError(f"{path}: {len(errors)} malformed row(s): {listed}")


def scan_jsonl(path: str | Path) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """The JSON objects of a ``.jsonl`` file with their line numbers, and ``(line number, problem)`` for each line
    that is not one (callers report them with their own checks through :func:`report_malformed`)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append((number, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(value, dict):
                errors.append((number, f"a JSON {type(value).__name__}, not an object"))
                continue
            rows.append((number, value))
    return rows, errors


def read_traces(
    path: str | Path, columns: Mapping[str, str] | None = None, *, required: Sequence[str] = TRACE_COLUMNS
) -> list[dict[str, Any]]:
    """Read trace rows (``problem``, ``answer``, ``trace``, and anything else) from a ``.jsonl`` file.

    Args:
        path: The file.
        columns: Where the fields are when the file names them differently, e.g. ``{"trace": "response",
            "answer": "gt_answer"}``; the rows returned use the standard names (other fields are kept as they are).
        required: The standard names every row must have, as non-empty strings (``answer`` may also be a number).

    Returns:
        The rows, in file order.

    Raises:
        ValueError: Rows that are not JSON objects or lack a required field; every malformed row is listed with its
            line number and what is missing.
    """
    cols = {name: (columns or {}).get(name, name) for name in {*required, *(columns or {})}}
    found, errors = scan_jsonl(path)
    rows = []
    for number, raw in found:
        row = dict(raw)
        for name, source in cols.items():
            if source in raw:
                row[name] = raw[source]
        missing = [
            cols[name] for name in required if not isinstance(row.get(name), (str, int, float)) or row[name] == ""
        ]
        if missing:
            errors.append((number, f"missing or empty {missing} (has {sorted(raw)})"))
            continue
        rows.append(row)
    report_malformed(path, errors)
    return rows


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write ``records`` to ``path``, one JSON object per line (UTF-8, non-ASCII kept as is).

    The file is written next to its destination and renamed into place, so a reader never sees half a file and
    ``path`` may be the file the records were read from.

    Returns:
        The number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
