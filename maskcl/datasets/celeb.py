"""Celeb-reID and Celeb-reID-light (Huang et al., IJCNN 2019 and TCSVT 2019): web images of
celebrities, most of them in changing clothes.

Layout: ``Celeb-reID/{train,query,gallery}/*.jpg`` and ``Celeb-reID-light/{train,query,gallery}/*.jpg``
(a ``readme.txt`` beside the folders is ignored). File names: ``x_y_z.jpg`` where, per the
maintainer, x is the person id, y the y-th image of that person and z is meaningless; y is kept in
the ``image_index`` column, z is never used (in particular not as a camera).

There are no camera and no clothes labels, so ``camid`` and ``clothes_id`` are filled such that no
gallery image is ever excluded as junk (the protocol is "all queries against all gallery images"):

* ``camid``: 0 for ``train`` and ``query``, 1 for ``gallery``. Query and gallery never share a
  camera, so the standard rule (junk = same pid and same camid) excludes nothing. This is
  MaskCL's choice; the training split has one camera.
* ``clothes_id``: unique per image (key = split + file name), so a query never shares clothes with
  a gallery image and the clothes-changing rule (junk = same pid and (same camid or same clothes))
  excludes nothing either: standard and CC results coincide, as they should on a dataset
  without labels.
* The same-clothes (SC) rule (junk = same pid and (same camid or different clothes)) is
  undefined here: with unique clothes it would exclude every true match, and no assignment can
  make both CC and SC exclude nothing (every cross-camera true match is good under exactly one of
  them). Evaluators must not run SC on Celeb-reID.

Pid integers are reused across splits for different people (test pids also fall in 1..632), so
ids are only comparable within a split group (train; query + gallery).

Official counts: Celeb-reID 1,052 ids, 34,186 images; train 632 ids / 20,208; query 420 / 2,972;
gallery 420 / 11,006. Celeb-reID-light 590 ids, 10,842 images; train 490 / 9,021; query 100 / 887;
gallery 100 / 934.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import pandas as pd

from .base import (ReIDDataset, SplitStats, _Rows, check_range, compile_basename, encode_clothes, list_images,
                   parse_failures)
from .protocol import Protocol

__all__ = ["CelebReID", "CelebReIDLight"]

logger = logging.getLogger(__name__)

#: camid per split (see the module docstring for why).
CELEB_CAMIDS: Dict[str, int] = {"train": 0, "query": 0, "gallery": 1}

_ACCESS = ("Celeb-reID(-light) is downloaded from the OneDrive/Baidu links in https://github.com/Huang-3/Celeb-reID "
           "(no request form; research only, do not distribute or use commercially)")


def celeb_protocols(label: str) -> Tuple[Protocol, ...]:
    """The one Celeb protocol, worded for ``label``: no camera labels, so nothing is excluded."""
    return (Protocol("general", "query", "gallery", "standard",
                     f"{label}: all queries vs all gallery images; nothing excluded (no cameras)",
                     camera_column=None,
                     short="all queries vs all gallery images; nothing excluded (no camera labels)"),)


class _Celeb(ReIDDataset):
    split_dirs: ClassVar[Dict[str, str]] = {"train": "train", "query": "query", "gallery": "gallery"}
    homepage: ClassVar[str] = "https://github.com/Huang-3/Celeb-reID"
    access: ClassVar[str] = _ACCESS
    extra_columns: ClassVar[Tuple[str, ...]] = ("image_index",)
    pattern: ClassVar[str] = r"^(\d+)_(\d+)_([0-9a-z]+)\.(?:jpg|jpeg|png)$"
    #: Largest person id (FIRe/CAMC assert 1 ≤ pid ≤ 632 on every Celeb-reID split); None = unchecked.
    max_pid: ClassVar[Optional[int]] = None

    def parse(self, root: Path) -> pd.DataFrame:
        regex = compile_basename(self.pattern)
        rows = _Rows()
        for split, folder in self.split_dirs.items():
            bad = []
            seen: Dict[Tuple[int, int], str] = {}
            for p in list_images(root / folder):
                m = regex.match(p.name)
                if not m:
                    bad.append(p.name)
                    continue
                pid, index = int(m.group(1)), int(m.group(2))
                check_range(self.name, p, "person id", pid, 1, self.max_pid)
                if (pid, index) in seen:
                    logger.warning("%s: %s and %s share person %d and image index %d (expected unique y per "
                                   "person)", self.name, seen[(pid, index)], p.name, pid, index)
                seen.setdefault((pid, index), p.name)
                rows.add(relpath=f"{folder}/{p.name}", split=split, pid=pid, camid=CELEB_CAMIDS[split],
                         image_index=index, clothes_key=f"{split}|{p.name}")
            if bad:
                raise parse_failures(self.name, root / folder, bad, "<pid>_<index>_<z>.jpg")
        frame = rows.frame(["relpath", "split", "pid", "camid", "image_index", "clothes_key"])
        frame["clothes_id"] = encode_clothes(frame["clothes_key"])
        return frame.drop(columns="clothes_key")


class CelebReID(_Celeb):
    """Celeb-reID (see the module docstring for cameras, clothes and counts)."""

    name: ClassVar[str] = "celebreid"
    dirnames: ClassVar[Tuple[str, ...]] = ("Celeb-reID", "Celeb-ReID", "celebreid", "Celeb_reID")
    foreign_dirnames: ClassVar[Tuple[str, ...]] = ("Celeb-reID-light", "Celeb-ReID-Light", "celebreid_light",
                                                   "Celeb_reID_light")
    max_pid: ClassVar[Optional[int]] = 632
    display_name: ClassVar[str] = "Celeb-reID"
    protocols: ClassVar[Tuple[Protocol, ...]] = celeb_protocols("Celeb-reID")
    headline_protocol: ClassVar[str] = "general"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("general",)  # its one protocol
    train_preset: ClassVar[Mapping[str, Any]] = {"allknn": 10}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=20208, ids=632),
        "query": SplitStats(images=2972, ids=420),
        "gallery": SplitStats(images=11006, ids=420),
    }


class CelebReIDLight(_Celeb):
    """Celeb-reID-light (see the module docstring for cameras, clothes and counts)."""

    name: ClassVar[str] = "celebreid_light"
    dirnames: ClassVar[Tuple[str, ...]] = ("Celeb-reID-light", "Celeb-ReID-Light", "celebreid_light",
                                           "Celeb_reID_light")
    foreign_dirnames: ClassVar[Tuple[str, ...]] = ("Celeb-reID", "Celeb-ReID", "celebreid", "Celeb_reID")
    display_name: ClassVar[str] = "Celeb-reID-light"
    protocols: ClassVar[Tuple[Protocol, ...]] = celeb_protocols("Celeb-reID-light")
    headline_protocol: ClassVar[str] = "general"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("general",)  # its one protocol
    train_preset: ClassVar[Mapping[str, Any]] = {"iters": 200, "allknn": 10}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=9021, ids=490),
        "query": SplitStats(images=887, ids=100),
        "gallery": SplitStats(images=934, ids=100),
    }
