"""PRCC (Yang, Wu, Zheng, TPAMI 2019, "Person Re-identification by Contour Sketch under Moderate
Clothing Change").

Layout (only ``rgb/`` is read; other modality folders beside it are ignored)::

    prcc/rgb/train/<pid>/<CAM>_cropped_rgb<NNN>.jpg      CAM = A, B or C (first letter of the name)
    prcc/rgb/val/<pid>/<CAM>_cropped_rgb<NNN>.jpg
    prcc/rgb/test/{A,B,C}/<pid>/cropped_rgb<NNN>.jpg     camera = the A/B/C folder

Splits: ``train``, ``val``, ``query_sc`` (test/B, same clothes as the gallery), ``query_cc``
(test/C, changed clothes) and ``gallery`` (test/A). camid: A → 0, B → 1, C → 2.
Clothes: cameras A and B show the same outfit, camera C another one, so the clothes key is
(split group, pid, ``AB`` or ``C``) with split groups ``train``, ``val`` and ``test``; a person
therefore has at most two clothes ids per group. Pids are the raw folder numbers: test folders
restart at ``001`` and overlap training numbers, which is why keys are qualified by split group.
Invariant checked: every validation id is a training id (the validation split holds other images
of the 150 training people).

Official counts: 221 ids, 3 cameras, 33,698 images; train 150 ids / 17,896; val 5,002 (the same
150 ids); test 71 ids: A 3,384, B 3,873, C 3,543.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Tuple

import pandas as pd

from ..errors import DatasetError
from .base import (ReIDDataset, SplitStats, _Rows, compile_basename, encode_clothes, list_images, parse_failures,
                   person_folders)
from .protocol import Protocol

__all__ = ["PRCC"]

logger = logging.getLogger(__name__)

_CAMERAS = {"A": 0, "B": 1, "C": 2}


class PRCC(ReIDDataset):
    name: ClassVar[str] = "prcc"
    dirnames: ClassVar[Tuple[str, ...]] = ("prcc", "PRCC")
    split_dirs: ClassVar[Dict[str, str]] = {
        "train": "rgb/train", "val": "rgb/val",
        "query_sc": "rgb/test/B", "query_cc": "rgb/test/C", "gallery": "rgb/test/A",
    }
    splits: ClassVar[Tuple[str, ...]] = ("train", "val", "query_sc", "query_cc", "gallery")
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=17896, ids=150, cameras=3),
        "val": SplitStats(images=5002, ids=150, cameras=3),
        "query_sc": SplitStats(images=3873, cameras=1),
        "query_cc": SplitStats(images=3543, cameras=1),
        "gallery": SplitStats(images=3384, cameras=1),
    }
    homepage: ClassVar[str] = "http://www.isee-ai.cn/~yangqize/clothing.html"
    access: ClassVar[str] = ("PRCC is linked from its project page http://www.isee-ai.cn/~yangqize/clothing.html "
                             "(CAL's loader also cites https://drive.google.com/file/d/"
                             "1yTYawRm4ap3M-j0PjLQJ--xmZHseFDLz/view); check the page for the access terms")
    train_pattern: ClassVar[str] = r"^([ABC])_cropped_rgb(\d+)\.(?:jpg|jpeg|png)$"
    test_pattern: ClassVar[str] = r"^(?:([ABC])_)?cropped_rgb(\d+)\.(?:jpg|jpeg|png)$"
    display_name: ClassVar[str] = "PRCC"
    protocols: ClassVar[Tuple[Protocol, ...]] = (
        Protocol("sc_multishot", "query_sc", "gallery", "standard",
                 "PRCC same clothes, multi-shot (CAL): camera B queries vs the full camera A gallery",
                 short="same clothes (camera B vs A), multi-shot: the full camera-A gallery (CAL)"),
        Protocol("cc_multishot", "query_cc", "gallery", "standard",
                 "PRCC cross clothes, multi-shot (CAL): camera C queries vs the full camera A gallery",
                 short="clothes-changing (camera C vs A), multi-shot: the full camera-A gallery (CAL)"),
        Protocol("sc_singleshot", "query_sc", "gallery", "standard",
                 "PRCC same clothes, single-shot: camera B queries vs one random camera A image per id; "
                 "CMC and AP on each drawn gallery, mean ± std over the draws", single_shot=True,
                 short="same clothes (camera B vs A), single-shot: one random camera-A image per "
                       "identity, mean over draws"),
        Protocol("cc_singleshot", "query_cc", "gallery", "standard",
                 "PRCC cross clothes, single-shot (original PRCC protocol, official MaskCL): camera C queries vs "
                 "one random camera A image per id; CMC and AP on each drawn gallery, mean ± std over the draws",
                 single_shot=True,
                 short="clothes-changing (camera C vs A), single-shot as in MaskCL: one random camera-A "
                       "image per identity, mean over draws"),
    )
    headline_protocol: ClassVar[str] = "cc_multishot"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("cc_multishot", "sc_multishot")
    train_preset: ClassVar[Mapping[str, Any]] = {"allknn": 5}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def parse(self, root: Path) -> pd.DataFrame:
        rows = _Rows()
        train_re, test_re = compile_basename(self.train_pattern), compile_basename(self.test_pattern)
        for split, folder in self.split_dirs.items():
            group = split if split in ("train", "val") else "test"
            folder_cam = None if group != "test" else folder[-1]
            hint = ("<pid>/<CAM>_cropped_rgb<NNN>.jpg" if folder_cam is None
                    else "<pid>/cropped_rgb<NNN>.jpg")
            bad = []
            for pid, pdir in person_folders(self.name, root / folder, hint):
                images = list_images(pdir)
                if not images:
                    logger.warning("%s: person folder %s holds no images", self.name, pdir)
                for p in images:
                    m = (train_re if folder_cam is None else test_re).match(p.name)
                    if not m:
                        bad.append(f"{pdir.name}/{p.name}")
                        continue
                    letter = (m.group(1) or folder_cam).upper()
                    if folder_cam is not None and letter != folder_cam:
                        raise DatasetError(f"{self.name}: {p}: camera prefix {letter} contradicts its folder "
                                           f"test/{folder_cam}; move the file to test/{letter}")
                    outfit = "C" if letter == "C" else "AB"
                    rows.add(relpath=f"{folder}/{pdir.name}/{p.name}", split=split, pid=pid,
                             camid=_CAMERAS[letter], clothes_key=f"{group}|{pid}|{outfit}")
            if bad:
                raise parse_failures(self.name, root / folder, bad, hint)
        frame = rows.frame(["relpath", "split", "pid", "camid", "clothes_key"])
        self._check_val_ids(root, frame)
        frame["clothes_id"] = encode_clothes(frame["clothes_key"])
        return frame.drop(columns="clothes_key")

    def _check_val_ids(self, root: Path, frame: pd.DataFrame) -> None:
        train_ids = set(frame.loc[frame["split"] == "train", "pid"])
        val_ids = sorted(set(frame.loc[frame["split"] == "val", "pid"]) - train_ids)
        if val_ids and train_ids:
            val = frame[(frame["split"] == "val") & frame["pid"].isin(val_ids[:3])]
            shown = ", ".join(dict.fromkeys(str((root / r).parent) for r in val["relpath"]))
            raise DatasetError(f"{self.name}: validation person folder(s) {shown} have no training folder "
                               f"(validation ids must be training ids); the train and val folders do not "
                               f"belong together")
