"""Atomic file output and small serialisation helpers.

No partial output may ever look complete: everything is written to a temporary name in the target
folder and renamed into place, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Tuple, Type, Union

import numpy as np

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "write_csv_atomic",
           "read_json", "json_default"]

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not the private 0600
    of the temporary file, so tables and models stay readable by whoever may read the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return mask


def write_text_atomic(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n")


def read_text_file(path: PathLike, parse: Callable[[IO[str]], Any], *, what: str, error: Type[Exception],
                   syntax: Tuple[Type[Exception], ...], describe: Callable[[Exception], str], missing: str = "",
                   fix: str = "") -> Any:
    """``parse`` of the UTF-8 text file ``path``; every way it can fail is one line of ``error``.

    ``what`` names the file (``metrics file``); ``syntax`` are ``parse``'s own errors, worded by
    ``describe`` (``not valid JSON (...)``); ``missing`` and ``fix`` end the not-found and the
    damaged-file lines (each with its leading ``; ``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{missing}") from None
    except syntax as e:
        raise error(f"{path}: {describe(e)}{fix}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not text (undecodable byte at offset {e.start}: garbled){fix}") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e}){fix}") from None


def read_json(path: PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv_atomic(path: PathLike, frame: "Any", **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, **kwargs)
