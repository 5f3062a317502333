"""Glue between Snakemake's ``snakemake`` object and the library.

Each adapter in ``workflow_scripts/`` calls ``run_job(main, snakemake)``: logging goes to the rule's
log file (and stderr), and a failure that is not a bug ends in one line and exit status 1:

* a ``MaskCLError`` (bad input): its message, which names the file or key and the fix; raised in a
  DataLoader worker, it reaches us re-raised by torch with the worker's traceback as its message,
  and the one line is the original error's message again;
* an ``OSError`` with an errno (permission denied, read-only file system, disk full, missing file,
  ...): the path, the system's cause and a fix for that cause (:func:`describe_os_error`);
* a DataLoader worker killed by the system, or a PyTorch file that could not be written (torch
  reports both as ``RuntimeError``).

Any other exception keeps its traceback in the log because it is a bug.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import traceback
from typing import Any, Callable, Optional

from .errors import MaskCLError

__all__ = ["setup_logging", "run_job", "describe_os_error", "worker_message"]


def setup_logging(log_path: Optional[str] = None, level: int = logging.INFO) -> logging.Logger:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)
    return logging.getLogger("maskcl")


# ---------------------------------------------------------------------------------------------- DataLoader workers
_CAUGHT = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.\s*\nOriginal Traceback")
_LAST = re.compile(r"^([\w.]+): (.*)$")
_ERRNO = re.compile(r"^\[Errno (\d+)\] (.*?)(?:: '(.*)')?(?: -> '(.*)')?$")


def worker_message(message: str) -> Optional[str]:
    """The original exception's message inside a DataLoader worker's re-raised one, else ``None``.

    torch re-raises a worker's exception in the main process as the same type, built from the text
    ``"Caught <Type> in DataLoader worker process <n>.\\nOriginal Traceback ...``, whose last line is
    ``"<module>.<Type>: <original message>"`` (our messages are one line).
    """
    m = _CAUGHT.match(message)
    if not m:
        return None
    lines = [ln for ln in message.rstrip().splitlines() if ln.strip()]
    last = _LAST.match(lines[-1]) if lines else None
    if last is None or last.group(1).rsplit(".", 1)[-1] != m.group(1):
        return None
    return last.group(2)


def _unwrap_os_error(e: OSError) -> OSError:
    """A worker's OSError comes back as ``type(e)(text)``: rebuild errno, cause and paths from the text."""
    original = worker_message(str(e)) if e.errno is None else None
    m = _ERRNO.match(original) if original else None
    if m is None:
        return e
    return OSError(int(m.group(1)), m.group(2), m.group(3), None, m.group(4))


# ---------------------------------------------------------------------------------------------- OS errors
def _folder(path: Optional[str]) -> str:
    if not path:
        return "the folder it writes to"
    parent = os.path.dirname(os.path.abspath(path))
    return parent or path


def _os_fix(code: Optional[int], path: Optional[str]) -> str:
    folder = _folder(path)
    if code in (errno.EACCES, errno.EPERM):
        return (f"check the permissions: the job's user must be able to write into {folder} and read the files it "
                f"uses (ls -ld {folder}); fix them or run in a folder you own, then rerun")
    if code == errno.EROFS:
        return (f"{folder} is on a read-only file system: run the workflow in a writable folder (snakemake "
                f"--directory) or remount it read-write, then rerun")
    if code == errno.ENOSPC:
        return f"free space on the disk holding {folder} (df -h {folder}), then rerun"
    if code == getattr(errno, "EDQUOT", -1):
        return f"the disk quota for {folder} is used up: free space or ask for a larger quota, then rerun"
    if code == errno.ENOENT:
        return ("the file or folder does not exist: check the path in config.yaml, restore the file, or rerun the "
                "stage that writes it")
    if code == errno.ENOTDIR:
        return "a part of the path is a file, not a folder: check the path"
    if code == errno.EISDIR:
        return "the path is a folder where a file is expected: check the path"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many open files: raise the limit (ulimit -n) or lower the number of DataLoader workers"
    if code == errno.ENAMETOOLONG:
        return "the path is too long: use a shorter folder"
    if code == errno.ENOMEM:
        return "the system is out of memory: give the job more memory or lower the batch size and workers"
    if code == errno.EIO:
        return f"the disk or network file system holding {folder} failed to read or write: check it, then rerun"
    if code == getattr(errno, "ESTALE", -1):
        return "the network file system lost the file (stale handle): rerun"
    if code in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "a network connection failed: check the network, then rerun"
    return f"check {path or folder} and the disk holding it, then rerun"


def describe_os_error(e: OSError) -> str:
    """One line for an OS-level failure: the path(s), the system's cause (errno name) and a fix."""
    path = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes, os.PathLike)) else None
    path2 = os.fsdecode(e.filename2) if isinstance(e.filename2, (str, bytes, os.PathLike)) else None
    cause = e.strerror or str(e) or type(e).__name__
    name = errno.errorcode.get(e.errno) if e.errno is not None else None
    head = (path + (f" -> {path2}" if path2 else "") + ": ") if path else ""
    return f"{head}{cause}{f' ({name})' if name else ''}; {_os_fix(e.errno, path)}"


def _runtime_message(e: RuntimeError) -> Optional[str]:
    """One line for the RuntimeErrors torch uses for environment failures, else ``None``."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if first.startswith("DataLoader worker (pid"):
        return (f"{first.rstrip('. ')}: the system stopped a data-loading process (usually out of memory or of shared "
                f"memory in /dev/shm); give the job more memory, or lower the batch size and the workers setting")
    if "PytorchStreamWriter failed writing file" in text or "file write failed" in text:
        return (f"a PyTorch file could not be written ({first[:200]}): the disk is full or the folder is not "
                f"writable; free space on the disk holding the results folder (df -h), then rerun")
    return None


# ---------------------------------------------------------------------------------------------- entry point
def _fail(logger: logging.Logger, message: str) -> None:
    logger.error("%s", message)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_job(main: Callable[[Any], None], smk: Any) -> None:
    """Run ``main(smk)`` with logging set up; user and I/O errors exit 1 with a single line."""
    log_path = smk.log[0] if len(smk.log) else None
    logger = setup_logging(log_path)
    try:
        main(smk)
    except MaskCLError as e:
        _fail(logger, worker_message(str(e)) or str(e))
    except OSError as e:
        e = _unwrap_os_error(e)
        if e.errno is None:  # an OSError without errno is a library's "bad data", which we should have named
            logger.error("unexpected failure (a bug, please report it):\n%s", traceback.format_exc())
            raise
        _fail(logger, describe_os_error(e))
    except RuntimeError as e:
        line = _runtime_message(e)
        if line is None:
            logger.error("unexpected failure (a bug, please report it):\n%s", traceback.format_exc())
            raise
        _fail(logger, line)
    except BaseException:
        logger.error("unexpected failure (a bug, please report it):\n%s", traceback.format_exc())
        raise
