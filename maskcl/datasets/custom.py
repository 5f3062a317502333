"""A user's own dataset: images in ``train/``, ``query/`` and ``gallery/`` of one folder, read in place.

Configured under ``data.custom`` (``root`` plus exactly one of ``labels`` and ``pattern``); the folder
is never copied, so the manifest stores its paths absolute (``maskcl.workspace``). The labels come
from one of two places:

* ``labels``: a CSV with the header ``path,pid,camid`` and optionally ``clothes_id``. ``path`` is
  relative to the root and starts with the split folder (``train/``, ``query/`` or ``gallery/``):
  where an image lies is its split, so no separate split column can disagree with the tree.
* ``pattern``: a regular expression with the named groups ``pid`` and ``camid`` (and optionally
  ``clothes_id``), matched from the start of every image file name under the three split folders
  (Market-1501 style: ``(?P<pid>\\d+)_c(?P<camid>\\d+)``).

Every id is a non-negative integer, kept raw. Clothes ids are encoded like the other datasets', keyed
by (split group, pid, clothes id) with split groups ``train`` and ``test`` (query + gallery); the
user's raw clothes id is kept in the ``outfit`` column. Without clothes ids every person wears one
outfit per split group and the manifest has no ``outfit`` column: that absence is what withholds the
``cc`` protocol (``Protocol.needs_column``), so evaluation offers only what the labels support.

Each bad input is one ``DatasetError`` line naming the file, the line and the column, and the fix;
a settings problem (both or neither of ``labels`` and ``pattern``, a pattern without its groups) is
a ``ConfigError`` naming the ``data.custom`` key.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import pandas as pd

from ..errors import ConfigError, DatasetError
from .base import IMAGE_EXTENSIONS, ReIDDataset, _Rows, encode_clothes, list_images
from .protocol import Protocol

__all__ = ["CustomFolder", "CustomDataset", "LABEL_COLUMNS", "read_labels", "read_pattern"]

logger = logging.getLogger(__name__)

#: The labels CSV's columns: the required ones, then the optional one.
LABEL_COLUMNS: Tuple[str, ...] = ("path", "pid", "camid", "clothes_id")
_REQUIRED = LABEL_COLUMNS[:3]
#: The pattern's named groups: the required ones, then the optional one.
_GROUPS: Tuple[str, ...] = ("pid", "camid", "clothes_id")
_SPLITS: Tuple[str, ...] = ("train", "query", "gallery")
_KEY = "data.custom"


@dataclass(frozen=True)
class CustomFolder:
    """``data.custom``, parsed once: the folder and where its labels come from.

    ``labels`` is absolute or relative to ``root``; ``root`` is absolute or relative to the working
    directory (as every folder of the config).
    """

    root: str
    labels: Optional[str] = None
    pattern: Optional[str] = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: str = _KEY) -> CustomFolder:
        """The record of a ``data.custom`` section (schema defaults filled in).

        Raises
        ------
        ConfigError
            No root, both or neither of ``labels`` and ``pattern``, or a pattern that does not
            compile or lacks the groups ``pid`` and ``camid`` (or names another group).
        """
        root, labels, pattern = section.get("root"), section.get("labels"), section.get("pattern")
        if not root:
            raise ConfigError(f"{key}.root is not set: set it to the folder that holds train/, query/ and gallery/")
        if (labels is None) == (pattern is None):
            both = "both are set" if labels is not None else "neither is set"
            raise ConfigError(f"{key}: set exactly one of labels (a CSV of path,pid,camid[,clothes_id]) and pattern "
                              f"(a file-name regex with the groups pid and camid); {both}")
        if pattern is not None:
            _compile(pattern, key)
        return cls(root=str(root), labels=None if labels is None else str(labels),
                   pattern=None if pattern is None else str(pattern))

    def to_dict(self) -> Dict[str, Optional[str]]:
        """Plain values, as a rule's params carry them (``from_config`` reads them back)."""
        return {"root": self.root, "labels": self.labels, "pattern": self.pattern}

    def labels_path(self) -> Optional[Path]:
        """The labels CSV, resolved against the root where relative (None with a pattern)."""
        if self.labels is None:
            return None
        path = Path(os.path.expanduser(self.labels))
        return path if path.is_absolute() else Path(os.path.expanduser(self.root)) / path


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{key}.pattern {pattern!r} is not a regular expression: {e}") from None
    groups = set(regex.groupindex)
    missing = [g for g in _GROUPS[:2] if g not in groups]
    other = sorted(groups - set(_GROUPS))
    if missing or other:
        what = (f"lacks the named group(s) {', '.join(missing)}" if missing
                else f"names the group(s) {', '.join(other)}, which mean nothing here")
        raise ConfigError(f"{key}.pattern {pattern!r} {what}; write (?P<pid>...) and (?P<camid>...), and optionally "
                          f"(?P<clothes_id>...), e.g. (?P<pid>\\d+)_c(?P<camid>\\d+)")
    return regex


def _id(text: str) -> Optional[int]:
    """``text`` as a non-negative integer, None when it is not one."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


# ---------------------------------------------------------------------------------------------- readers
def read_labels(csv_path: Path, root: Path) -> pd.DataFrame:
    """The rows of a labels CSV, each checked against the folder.

    Parameters
    ----------
    csv_path : Path
        ``path,pid,camid[,clothes_id]`` with a header; ``path`` relative to ``root``.
    root : Path
        The dataset folder (holding ``train/``, ``query/``, ``gallery/``).

    Returns
    -------
    pandas.DataFrame
        ``relpath, split, pid, camid`` and ``outfit`` (the raw clothes id) where the CSV has
        ``clothes_id``, in file order.

    Raises
    ------
    DatasetError
        ``<csv>: line <n>, column '<c>': <problem>; <fix>`` for the first bad cell: a missing or
        unknown column, an id that is not a non-negative integer, a path outside the three split
        folders, a file that does not exist or is no image, a path listed twice.
    """
    def fail(line: int, column: str, problem: str, fix: str) -> DatasetError:
        return DatasetError(f"{csv_path}: line {line}, column {column!r}: {problem}; {fix}")

    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: labels CSV not found; fix {_KEY}.labels (absolute, or relative to "
                           f"{_KEY}.root)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv_path}: labels CSV not readable ({e}); save it as UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    for col in _REQUIRED:
        if col not in header:
            raise fail(1, col, f"missing (the header is {','.join(header) or 'empty'})",
                       f"the header must be {','.join(_REQUIRED)} and optionally clothes_id")
    for col in header:
        if col not in LABEL_COLUMNS or header.count(col) > 1:
            problem = "repeated" if col in LABEL_COLUMNS else "unknown"
            raise fail(1, col, f"{problem} column", f"keep only {', '.join(LABEL_COLUMNS)} (clothes_id optional)")
    at = {c: header.index(c) for c in header}
    with_clothes = "clothes_id" in at
    rows = _Rows()
    seen: Dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise fail(line, header[min(len(cells), len(header) - 1)],
                       f"{len(cells)} cells where the header has {len(header)}", "one cell per column")
        rel = cells[at["path"]].strip()
        split = _split_of(rel, lambda problem, fix, line=line: fail(line, "path", problem, fix))
        if not (root / rel).is_file():
            raise fail(line, "path", f"{root / rel} does not exist", "fix the path (relative to the dataset root) "
                                                                     "or remove the row")
        if not rel.lower().endswith(IMAGE_EXTENSIONS):
            raise fail(line, "path", f"{rel} is not an image ({', '.join(IMAGE_EXTENSIONS)})", "list images only")
        norm = str(PurePosixPath(rel))
        if norm in seen:
            raise fail(line, "path", f"{rel} is listed on line {seen[norm]} already", "list each image once")
        seen[norm] = line
        ids: Dict[str, int] = {}
        for col in _GROUPS if with_clothes else _GROUPS[:2]:
            value = _id(cells[at[col]])
            if value is None:
                raise fail(line, col, f"{cells[at[col]].strip()!r} is not an id (a non-negative integer)",
                           "write a whole number >= 0")
            ids[col] = value
        rows.add(relpath=norm, split=split, pid=ids["pid"], camid=ids["camid"],
                 **({"outfit": ids["clothes_id"]} if with_clothes else {}))
    columns = ["relpath", "split", "pid", "camid"] + (["outfit"] if with_clothes else [])
    return rows.frame(columns)


def _split_of(rel: str, fail: Any) -> str:
    """The split of a labels path: its first folder, one of ``train``, ``query``, ``gallery``."""
    if not rel:
        raise fail("empty", "give the image path relative to the dataset root, e.g. train/0001_c1_01.jpg")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise fail(f"{rel} is not a relative path inside the dataset root",
                   "write it relative to the root with / separators, e.g. query/0001_c2_03.jpg")
    if len(p.parts) < 2 or p.parts[0] not in _SPLITS:
        raise fail(f"{rel} is in no split (its first folder must be train, query or gallery)",
                   "move the image into one of those folders and fix the path")
    return p.parts[0]


def read_pattern(pattern: str, root: Path) -> pd.DataFrame:
    """The rows of every image under ``root/{train,query,gallery}``, labelled by ``pattern``.

    The pattern is matched from the start of each file name (``re.match``); sub-folders are walked,
    so ``train/0001/0001_c1_01.jpg`` works as well as a flat folder.

    Returns
    -------
    pandas.DataFrame
        ``relpath, split, pid, camid`` and ``outfit`` where the pattern has ``clothes_id``.

    Raises
    ------
    DatasetError
        A file name the pattern does not match, or a group that matched something other than a
        non-negative integer: one line naming the file and the group.
    """
    regex = _compile(pattern, _KEY)
    with_clothes = "clothes_id" in regex.groupindex
    rows = _Rows()
    for split in _SPLITS:
        for path in list_images(root / split, recursive=True):
            m = regex.match(path.name)
            if m is None:
                raise DatasetError(f"{path}: the file name does not match {_KEY}.pattern {pattern!r}; rename the "
                                   f"file, move it out of {split}/, or fix the pattern")
            ids: Dict[str, int] = {}
            for group in _GROUPS if with_clothes else _GROUPS[:2]:
                value = _id(m.group(group) or "")
                if value is None:
                    raise DatasetError(f"{path}: group {group!r} of {_KEY}.pattern matched {m.group(group)!r}, not "
                                       f"an id (a non-negative integer); make the group match digits only, e.g. "
                                       f"(?P<{group}>\\d+)")
                ids[group] = value
            rows.add(relpath=path.relative_to(root).as_posix(), split=split, pid=ids["pid"], camid=ids["camid"],
                     **({"outfit": ids["clothes_id"]} if with_clothes else {}))
    columns = ["relpath", "split", "pid", "camid"] + (["outfit"] if with_clothes else [])
    return rows.frame(columns)


# ---------------------------------------------------------------------------------------------- the dataset
class CustomDataset(ReIDDataset):
    """A user's folder (see the module). Built with its ``CustomFolder``; the bare class states the facts."""

    name: ClassVar[str] = "custom"
    split_dirs: ClassVar[Dict[str, str]] = {s: s for s in _SPLITS}
    access: ClassVar[str] = (f"this is your own data: set {_KEY}.root to its folder and {_KEY}.labels or "
                             f"{_KEY}.pattern (see README.md, 'Your own dataset')")
    user_folder: ClassVar[bool] = True
    display_name: ClassVar[str] = "Own dataset"
    protocols: ClassVar[Tuple[Protocol, ...]] = (
        Protocol("general", "query", "gallery", "standard",
                 "Own dataset general (standard): all queries vs all gallery images; junk = same id & same camera",
                 short="standard rule: all queries vs all gallery images; same-identity same-camera images excluded"),
        Protocol("cc", "query", "gallery", "cc",
                 "Own dataset cloth-changing (CAL): all queries vs all gallery images; junk = same id & (same camera "
                 "or same clothes); only where the labels give clothes ids",
                 needs_column="outfit",
                 short="clothes-changing (CAL): same-identity images with the same clothes or camera excluded"),
    )
    # The headline is the protocol every copy has: cc exists only where the labels give clothes ids.
    headline_protocol: ClassVar[str] = "general"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("general", "cc")
    train_preset: ClassVar[Mapping[str, Any]] = {}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def __init__(self, folder: Optional[CustomFolder] = None) -> None:
        self.folder = folder
        # set by parse() from what the labels hold: ("outfit",) where they give clothes ids, else none
        self.extra_columns = ()

    def find_root(self, root: os.PathLike | str) -> Path:
        """``root`` itself, which must hold the three split folders (a user's folder is never searched)."""
        root = Path(os.path.expanduser(str(root)))
        if not root.is_dir():
            raise DatasetError(f"{self.name}: {root} is not a folder; set {_KEY}.root to the folder that holds "
                               f"train/, query/ and gallery/")
        missing = [s + "/" for s in _SPLITS if not (root / s).is_dir()]
        if missing:
            raise DatasetError(f"{self.name}: {root} lacks {', '.join(missing)}; put the images in train/, query/ "
                               f"and gallery/ under {_KEY}.root")
        return root

    def parse(self, root: Path) -> pd.DataFrame:
        if self.folder is None:
            raise ConfigError(f"{self.name}: no {_KEY} settings given; set {_KEY}.root and {_KEY}.labels or "
                              f"{_KEY}.pattern")
        csv_path = self.folder.labels_path()
        if csv_path is not None:
            frame, source = read_labels(csv_path, root), f"labels {csv_path}"
            self._note_unlisted(root, frame)
        else:
            assert self.folder.pattern is not None
            frame, source = read_pattern(self.folder.pattern, root), f"pattern {self.folder.pattern}"
        for split in _SPLITS:
            if not (frame["split"] == split).any():
                raise DatasetError(f"{self.name}: split {split!r} has no images ({source}); every split needs at "
                                   f"least one image under {root / split}")
        with_clothes = "outfit" in frame.columns
        group = frame["split"].map(lambda s: "train" if s == "train" else "test")
        keys = group + "|" + frame["pid"].astype(str)
        if with_clothes:
            keys = keys + "|" + frame["outfit"].astype(str)
        frame["clothes_id"] = encode_clothes(keys)
        self.extra_columns = ("outfit",) if with_clothes else ()
        frame.attrs["labels"] = source
        frame.attrs["clothes_ids"] = "given" if with_clothes else "none (one outfit per person and split group)"
        return frame

    def _note_unlisted(self, root: Path, frame: pd.DataFrame) -> None:
        """Images in the split folders that the CSV leaves out are not used; the log says how many."""
        listed = set(frame["relpath"])
        unlisted = [p for s in _SPLITS for p in list_images(root / s, recursive=True)
                    if p.relative_to(root).as_posix() not in listed]
        if unlisted:
            logger.warning("%s: %d image(s) under %s are not in the labels CSV and are left out (e.g. %s)", self.name,
                           len(unlisted), root, unlisted[0].relative_to(root).as_posix())

    def source_hint(self) -> str:
        return self.access
