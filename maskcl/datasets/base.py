"""Shared machinery for dataset loaders.

A loader declares its layout up front (root folder names, split folders, file-name pattern, official
counts) and implements ``parse(root)`` returning one row per image. Everything is parsed from
basenames (never full paths: a parent folder such as ``reid_cc`` must not leak into a clothes key),
files are sorted so that the same tree always gives the same table, and every failure is a
``DatasetError`` that names the path and the fix.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from ..errors import DatasetError
from ..manifest import MANIFEST_COLUMNS  # the columns every loader returns, in order; extras follow
from .protocol import Protocol

__all__ = [
    "IMAGE_EXTENSIONS", "MANIFEST_COLUMNS", "SplitStats", "ReIDDataset", "list_images",
    "parse_failures", "encode_clothes", "split_statistics", "check_nonempty_splits", "check_range",
    "person_folders", "parse_outfit_files",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")



@dataclass(frozen=True)
class SplitStats:
    """Official (published) counts of one split; ``None`` where the source gives none."""

    images: Optional[int] = None
    ids: Optional[int] = None
    cameras: Optional[int] = None
    clothes: Optional[int] = None


def list_images(folder: Path, recursive: bool = False) -> List[Path]:
    """Sorted image files of ``folder`` (optionally recursive); hidden files are skipped."""
    if not folder.is_dir():
        return []
    out: List[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in filenames:
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                    out.append(Path(dirpath) / fn)
    else:
        out = [p for p in folder.iterdir()
               if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def person_folders(dataset: str, folder: Path, hint: str) -> List[Tuple[int, Path]]:
    """``(pid, path)`` of the numeric person folders of ``folder``, sorted by name.

    Loose images next to the person folders, or non-numeric folder names, mean the tree was
    reorganised (for example flattened); both are refused with the names of the offenders.
    """
    if not folder.is_dir():
        return []
    loose = list_images(folder)
    if loose:
        shown = ", ".join(p.name for p in loose[:5])
        raise DatasetError(f"{dataset}: {folder} holds image files directly ({shown}); expected one folder "
                           f"per person ({hint}); restore the original layout")
    out: List[Tuple[int, Path]] = []
    bad: List[str] = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name.isdigit():
            out.append((int(d.name), d))
        else:
            bad.append(d.name)
    if bad:
        raise DatasetError(f"{dataset}: {len(bad)} folder name(s) in {folder} are not person ids (digits): "
                           f"{', '.join(bad[:5])}; expected {hint}")
    return out


def parse_failures(dataset: str, folder: Path, bad: Sequence[str], pattern: str) -> DatasetError:
    """The one-line error for unparseable file names, showing the first few."""
    shown = ", ".join(bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return DatasetError(
        f"{dataset}: {len(bad)} file name(s) in {folder} do not match the expected pattern "
        f"{pattern}: {shown}{more}; remove or rename them")


def check_range(dataset: str, path: Path, what: str, value: int, low: int, high: Optional[int]) -> None:
    """Raise a ``DatasetError`` naming ``path`` when ``value`` lies outside ``low..high``."""
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise DatasetError(f"{dataset}: {path}: {what} {value} outside {bound}; this file does not belong "
                           f"to {dataset} or was renamed")


def encode_clothes(keys: Iterable[str]) -> List[int]:
    """Map clothes keys (already qualified by split group and pid) to contiguous integers.

    Sorting the distinct keys first makes the encoding independent of file order.
    """
    keys = list(keys)
    codes = {k: i for i, k in enumerate(sorted(set(keys)))}
    return [codes[k] for k in keys]


def split_statistics(frame: pd.DataFrame, split_order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Images, identities, cameras and clothes per split (the statistics file of the download stage).

    Splits named in ``split_order`` come first, in that order; any other split follows in order of
    appearance, so no row of ``frame`` is left out of the statistics.
    """
    present = list(dict.fromkeys(frame["split"]))
    splits = list(split_order or []) + [s for s in present if s not in (split_order or [])]
    rows = []
    for s in splits:
        sub = frame[frame["split"] == s]
        rows.append({"split": s, "images": int(len(sub)), "ids": int(sub["pid"].nunique()),
                     "cameras": int(sub["camid"].nunique()), "clothes": int(sub["clothes_id"].nunique())})
    return pd.DataFrame(rows, columns=["split", "images", "ids", "cameras", "clothes"])


def check_nonempty_splits(name: str, root: Path, frame: pd.DataFrame, splits: Sequence[str],
                          folders: Dict[str, str]) -> None:
    for s in splits:
        if not (frame["split"] == s).any():
            where = root / folders.get(s, s)
            raise DatasetError(f"{name}: split {s!r} is empty (no images found in {where}); "
                               f"check that the archive was extracted completely")


def _lower_names(names: Iterable[str]) -> List[str]:
    return [n.lower() for n in names]


class ReIDDataset:
    """Base class of all loaders. Subclasses set the class attributes and implement ``parse``."""

    #: Registry key, as written in ``config.yaml``.
    name: ClassVar[str] = ""
    #: Folder names the dataset root may have (the first is canonical; matched case-insensitively);
    #: used by ``find_root``.
    dirnames: ClassVar[Tuple[str, ...]] = ()
    #: Folder names that identify *another* dataset with the same layout (Celeb-reID vs
    #: Celeb-reID-light); ``find_root`` never accepts them.
    foreign_dirnames: ClassVar[Tuple[str, ...]] = ()
    #: Split name → folder relative to the root, for layout checks and error messages.
    split_dirs: ClassVar[Dict[str, str]] = {}
    #: Splits every complete copy has, in manifest order.
    splits: ClassVar[Tuple[str, ...]] = ("train", "query", "gallery")
    #: Published counts per split; compared against by ``official_differences``.
    official: ClassVar[Dict[str, SplitStats]] = {}
    #: Where to get the data (shown when the source is missing).
    homepage: ClassVar[str] = ""
    access: ClassVar[str] = ""
    #: True when the data is only handed out after a signed request (licence-gated).
    licence_gated: ClassVar[bool] = False
    #: Extra columns this loader adds after ``MANIFEST_COLUMNS``.
    extra_columns: ClassVar[Tuple[str, ...]] = ()
    #: True for a user's own folder, configured under ``data.<name>`` and read in place (never
    #: downloaded, extracted or generated); its loader is built with those settings.
    user_folder: ClassVar[bool] = False

    # Facts every dataset must state itself: declared here without a value so that a subclass that
    # forgets one fails ``tests/test_datasets.py`` (and raises ``AttributeError`` on use) instead of
    # silently inheriting another dataset's answer.
    #: The name used in papers and in every table (``VC-Clothes``).
    display_name: ClassVar[str]
    #: Evaluation protocols, in report order (the first ones are saved in ``ranks.npz`` after the
    #: headline); each carries its ``description`` (``metrics.json``) and ``short`` (the tables).
    protocols: ClassVar[Tuple[Protocol, ...]]
    #: Name of the protocol quoted as the dataset's headline number.
    headline_protocol: ClassVar[str]
    #: The protocols the field's comparison table prints for this dataset: the headline, then the
    #: general (or same-clothes) setting papers put beside it, where the headline is not already it.
    comparison_protocols: ClassVar[Tuple[str, ...]]
    #: The official ``run_code.sh`` train values for this dataset (its ``allknn``, ``iters``): a layer
    #: between the config's ``train`` and its ``dataset_overrides.<dataset>.train``, merged key by key.
    train_preset: ClassVar[Mapping[str, Any]]
    #: True when every image comes with a ground-truth label map (the ``parsing`` column), so the
    #: ``groundtruth`` mask source and the mask-quality table apply.
    ground_truth_parsing: ClassVar[bool]
    #: True when the data is generated locally (``generate``) rather than downloaded.
    generated: ClassVar[bool]

    # ------------------------------------------------------------------ layout
    def required_paths(self) -> List[str]:
        """Paths (relative to the root) whose presence identifies this dataset."""
        return sorted(set(self.split_dirs.values()))

    def is_root(self, path: Path) -> bool:
        if path.name.lower() in _lower_names(self.foreign_dirnames):
            return False
        return all((path / rel).exists() for rel in self.required_paths())

    def _named_children(self, folder: Path) -> List[Path]:
        """Children of ``folder`` whose name is one of ``dirnames`` (case-insensitive, in that order)."""
        try:
            children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
        except OSError:
            return []
        return [children[n] for n in dict.fromkeys(_lower_names(self.dirnames)) if n in children]

    def find_root(self, root: os.PathLike | str) -> Path:
        """Return the dataset root under ``root``: itself, ``root/<dirname>``, or one level deeper.

        Archives often extract one level deeper than expected (VC-Clothes/VC-Clothes, or a folder
        named after the archive); both are accepted. A missing or unrecognisable root raises a
        ``DatasetError`` listing what was expected and what was found; a folder that holds several
        candidate roots is refused instead of guessed.
        """
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{self.name}: dataset root {root} does not exist; set "
                               f"data.sources.{self.name}.source in config.yaml to the dataset archive, "
                               f"URL or extracted folder")
        if not root.is_dir():
            raise DatasetError(f"{self.name}: dataset root {root} is not a directory")
        if self.is_root(root):
            return root
        for named in self._named_children(root):
            for c in [named] + self._named_children(named):
                if self.is_root(c):
                    return c
        try:
            children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            files = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        except OSError as e:  # pragma: no cover - permission problems
            raise DatasetError(f"{self.name}: cannot list {root}: {e}") from e
        matches = [c for c in children if self.is_root(c)]
        matches += [g for c in children for g in self._named_children(c) if self.is_root(g)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DatasetError(f"{self.name}: {root} holds several {self.name} roots "
                               f"({', '.join(str(m) for m in matches)}); point the source at one of them")
        found = ", ".join(p.name + "/" for p in children[:12]) or "no folders"
        if files:
            found += "; files: " + ", ".join(files[:5])
        foreign = [c.name for c in [root] + children if c.name.lower() in _lower_names(self.foreign_dirnames)]
        hint = (f"; {', '.join(foreign)} belongs to another dataset, not {self.name}" if foreign else "")
        expected = ", ".join(self.required_paths())
        raise DatasetError(f"{self.name}: {root} does not look like {self.name}: expected "
                           f"{expected} (under {root} or {root}/{'|'.join(self.dirnames) or '<name>'}), "
                           f"found {found}{hint}")

    # ------------------------------------------------------------------ parsing
    def parse(self, root: Path) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, root: os.PathLike | str) -> pd.DataFrame:
        """Find the root, parse it, and return the manifest table (absolute ``path`` column).

        Parameters
        ----------
        root : path
            The dataset root, or a folder holding it (see ``find_root``).

        Returns
        -------
        pandas.DataFrame
            One row per image: ``MANIFEST_COLUMNS`` then ``extra_columns``, sorted by split (in
            ``splits`` order) and relative path. ``attrs["root"]`` is the resolved dataset root.

        Raises
        ------
        DatasetError
            Missing root, wrong layout, empty split, unparseable file name or a broken invariant.
        """
        droot = self.find_root(root).resolve()
        frame = self.parse(droot)
        check_nonempty_splits(self.name, droot, frame, self.splits, self.split_dirs)
        missing = [c for c in list(MANIFEST_COLUMNS[1:]) + list(self.extra_columns) if c not in frame.columns]
        if missing:  # a loader bug, not a user mistake
            raise RuntimeError(f"{self.name}: parse() did not produce the column(s) {missing}")
        dup = frame["relpath"][frame["relpath"].duplicated()]
        if len(dup):  # pragma: no cover - relpaths come from distinct files
            raise RuntimeError(f"{self.name}: duplicate relpath {dup.iloc[0]}")
        frame = frame.copy()
        frame["path"] = [str(droot / r) for r in frame["relpath"]]
        order = {s: i for i, s in enumerate(self.splits)}
        frame["_order"] = frame["split"].map(order).fillna(len(order))
        frame = frame.sort_values(["_order", "relpath"], kind="stable").drop(columns="_order")
        frame = frame[list(MANIFEST_COLUMNS) + list(self.extra_columns)].reset_index(drop=True)
        for c in ("pid", "camid", "clothes_id"):
            frame[c] = frame[c].astype("int64")
        frame.attrs["root"] = str(droot)
        frame.attrs["dataset"] = self.name
        return frame

    # ------------------------------------------------------------------ statistics
    def official_differences(self, stats: pd.DataFrame) -> List[str]:
        """Human-readable differences between measured and official counts (empty when equal)."""
        out = []
        measured = stats.set_index("split")
        for split, off in self.official.items():
            if split not in measured.index:
                out.append(f"split {split!r} missing (official: {off.images} images)")
                continue
            for key in ("images", "ids", "cameras", "clothes"):
                want = getattr(off, key)
                if want is None:
                    continue
                got = int(measured.loc[split, key])
                if got != want:
                    out.append(f"{split}.{key} = {got}, official {want}")
        return out

    def source_hint(self) -> str:
        """Where and how to obtain the data, for the missing-source error."""
        gate = "this dataset is licence-gated: " if self.licence_gated else ""
        return f"{gate}{self.access or self.homepage}"

    def generate(self, target: Path, params: Mapping[str, Any], workers: int = 1) -> Path:
        """Write the dataset into ``target`` and return its location (only where ``generated``)."""
        raise NotImplementedError(f"{self.name} is downloaded, not generated")


@dataclass
class _Rows:
    """Column-wise accumulator used by the loaders (cheaper than a list of dicts)."""

    columns: Dict[str, list] = field(default_factory=dict)

    def add(self, **values: object) -> None:
        for k, v in values.items():
            self.columns.setdefault(k, []).append(v)

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame({c: self.columns.get(c, []) for c in columns})


def compile_basename(pattern: str) -> "re.Pattern[str]":
    return re.compile(pattern, re.IGNORECASE)


def parse_outfit_files(dataset: str, root: Path, split_dirs: Mapping[str, str], pattern: str,
                       fields: Tuple[str, str, str], num_cameras: int, shown: str) -> pd.DataFrame:
    """Rows of a flat ``<split folder>/<file>`` tree whose names hold a pid, a camera and an outfit.

    LTCC-style layouts (LTCC, SynthCC, VC-Clothes) differ only in where the three integers sit in
    the file name, so one loop serves them: ``fields`` names what regex groups 1..3 of ``pattern``
    hold (``"pid"``, ``"cam"``, ``"outfit"``, in the file name's order). Cameras are 1-based in the
    names (``camid = cam - 1``); clothes are keyed by (split group, pid, outfit) with split groups
    ``train`` and ``test`` (every other split). Unparseable names of one folder raise together,
    ``shown`` being the pattern as the user reads it.

    Returns the columns ``relpath, split, pid, camid, outfit, clothes_id``.
    """
    regex = compile_basename(pattern)
    at = {f: i + 1 for i, f in enumerate(fields)}
    rows = _Rows()
    for split, folder in split_dirs.items():
        bad = []
        group = "train" if split == "train" else "test"
        for p in list_images(root / folder):
            m = regex.match(p.name)
            if not m:
                bad.append(p.name)
                continue
            pid, outfit, cam = int(m.group(at["pid"])), int(m.group(at["outfit"])), int(m.group(at["cam"]))
            check_range(dataset, p, "camera", cam, 1, num_cameras)
            rows.add(relpath=f"{folder}/{p.name}", split=split, pid=pid, camid=cam - 1,
                     outfit=outfit, clothes_key=f"{group}|{pid}|{outfit}")
        if bad:
            raise parse_failures(dataset, root / folder, bad, shown)
    frame = rows.frame(["relpath", "split", "pid", "camid", "outfit", "clothes_key"])
    frame["clothes_id"] = encode_clothes(frame["clothes_key"])
    return frame.drop(columns="clothes_key")
