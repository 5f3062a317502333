"""What a stage reads from the stages before it, checked before anything is computed from it.

Every file a rule reads was written by another rule. A file cut short by a killed copy, garbled on
disk or holding values no writer produces must not reach a table as a nonsense number or a blank
cell: it is reported here, in one line naming the file, what is wrong with it and the command that
rebuilds it (:func:`rerun_hint`).

The stage decides which error class a problem raises (``ReportingError`` in the tables stage,
``EvaluationError`` in evaluation, ``DatasetError`` in training), so each stage keeps its own kind.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Type

import numpy as np
import pandas as pd

from .errors import MaskCLError
from .repair import force_command, shown_path

__all__ = ["rerun_hint", "shown_path", "read_csv_file", "check_numeric_column"]

PathLike = os.PathLike | str


def rerun_hint(path: PathLike, rule: str) -> str:
    """The fix for a bad output of ``rule``: rebuild that one file (and what depends on it)."""
    return f"rerun the {rule} rule: {force_command(shown_path(path))}"


def read_csv_file(path: PathLike, *, what: str, rule: str, columns: Sequence[str] = (),
                  error: Type[MaskCLError] = MaskCLError, **read_kwargs) -> pd.DataFrame:
    """A CSV written by ``rule``, checked for being whole before pandas reads it.

    Checked: the file exists and is UTF-8 text, has a header of distinct names including
    ``columns``, ends with a line break (a file cut short ends mid-line) and every row has as many
    fields as the header (a truncated or garbled row has fewer or more). Blank lines are allowed.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the message (``"mask index"``, ``"training log"``).
    rule : str
        The rule that writes it (named in the fix).
    columns : sequence of str
        Columns that must be present.
    error : MaskCLError subclass
        Raised for every problem (the reading stage's own kind).
    **read_kwargs
        Passed to ``pandas.read_csv``.

    Returns
    -------
    pandas.DataFrame
        As ``pandas.read_csv(path, **read_kwargs)`` would.
    """
    fix = rerun_hint(path, rule)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; {fix}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e}); {fix}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not text (undecodable byte at offset {e.start}: garbled or another "
                    f"file); {fix}") from None
    if not text.strip():
        raise error(f"{path}: {what} is empty; {fix}")
    if "\x00" in text:
        raise error(f"{path}: {what} contains NUL bytes (garbled); {fix}")
    if not text.endswith("\n"):
        raise error(f"{path}: {what} ends in the middle of a line (truncated); {fix}")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        width = len(header)
        for row in reader:
            if row and len(row) != width:
                raise error(f"{path}: line {reader.line_num} of the {what} has {len(row)} field(s) but the header "
                            f"has {width} (truncated or garbled); {fix}")
    except csv.Error as e:
        raise error(f"{path}: {what} is not a readable CSV (line {reader.line_num}: {e}); {fix}") from None
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes or any(not c.strip() for c in header):
        bad = f"repeated column(s) {', '.join(dupes)}" if dupes else "an unnamed column"
        raise error(f"{path}: the {what} header has {bad} (garbled); {fix}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise error(f"{path}: {what} lacks column(s) {', '.join(missing)}; {fix}")
    try:
        return pd.read_csv(io.StringIO(text), **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise error(f"{path}: {what} is not a readable CSV ({str(e).splitlines()[0]}); {fix}") from None


def check_numeric_column(frame: pd.DataFrame, column: str, path: PathLike, *, what: str, rule: str,
                         error: Type[MaskCLError] = MaskCLError, lo: Optional[float] = None,
                         hi: Optional[float] = None, integer: bool = False, missing: bool = True) -> None:
    """Every cell of ``column`` is a finite number in [lo, hi] (an integer with ``integer``).

    ``missing``: cells pandas reads as missing (empty, ``nan``) are allowed (a value a row does not
    have, or one its writer computed as undefined). Anything else is reported with its line (header
    = line 1, first row = line 2).
    """
    if column not in frame.columns:
        return
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    absent = raw.isna().to_numpy()
    with np.errstate(invalid="ignore"):
        bad = (np.isnan(values) & (~absent | (not missing))) | np.isinf(values)
        if lo is not None:
            bad |= values < lo
        if hi is not None:
            bad |= values > hi
        if integer:
            bad |= np.isfinite(values) & (values != np.round(values))
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    v, cell, line, fix = values[i], raw.iloc[i], i + 2, rerun_hint(path, rule)
    cell = cell.item() if isinstance(cell, np.generic) else cell
    if absent[i]:
        raise error(f"{path}: {what} column {column!r} is empty on line {line}; {fix}")
    if math.isnan(v):
        raise error(f"{path}: {what} column {column!r} has {cell!r} on line {line}, not a number "
                    f"(truncated or garbled); {fix}")
    if integer and math.isfinite(v) and v != round(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
        raise error(f"{path}: {what} column {column!r} = {cell!r} on line {line} is not an integer; {fix}")
    rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
    raise error(f"{path}: {what} column {column!r} = {cell!r} on line {line} is outside {rng}; {fix}")
