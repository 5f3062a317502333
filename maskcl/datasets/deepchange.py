"""DeepChange (Xu & Zhu, ICCV 2023; arXiv 2105.14685): long-term clothes changes over 12 months.

Layout (root ``DeepChangeDataset`` as in CAL, or ``DeepChange`` as in FIRe)::

    train-set/  val-set-query/  val-set-gallery/  test-set-query/  test-set-gallery/   (images)
    train-set-bbox.txt  val-set-query-bbox.txt  ...  test-set-gallery-bbox.txt           (lists)

Each list line is ``<image file name>,<tracklet id>``. Image names have six ``_``-separated fields,
``P<pid>_C<cam>_<day>_<hour>_<f5>_<f6>.jpg``, cameras 1..17, and no other dot.

Splits: ``train``, ``val_query``, ``val_gallery``, ``query`` (test-set-query) and ``gallery``
(test-set-gallery). camid = real camera − 1. ``tracklet`` (extra column) comes from the list file;
CAL's protocol uses it in place of the camera. Every image must be listed in its list file and
every list entry must have an image: a mismatch is an error naming both.
Clothes: DeepChange has no clothes labels; like CAL we use the proxy "same person, same day ≈ same
clothes": the key is (split group, pid, day field) with groups ``train``, ``val`` and ``test``.

Official counts: 1,121 ids, 17 cameras, 178,407 images; train 450 ids / 75,083; val 150 ids:
query 4,976, gallery 17,527; test 521 ids: query 17,149, gallery 63,672.
Access: sign DeepChangeAccessAgreement.pdf and email it (see https://github.com/PengBoXiangShang/deepchange).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Tuple

import pandas as pd

from ..errors import DatasetError
from .base import (ReIDDataset, SplitStats, _Rows, check_range, compile_basename, encode_clothes, list_images,
                   parse_failures)
from .protocol import Protocol

__all__ = ["DeepChange"]

_GROUPS = {"train": "train", "val_query": "val", "val_gallery": "val", "query": "test", "gallery": "test"}


class DeepChange(ReIDDataset):
    name: ClassVar[str] = "deepchange"
    dirnames: ClassVar[Tuple[str, ...]] = ("DeepChangeDataset", "DeepChange")
    split_dirs: ClassVar[Dict[str, str]] = {
        "train": "train-set", "val_query": "val-set-query", "val_gallery": "val-set-gallery",
        "query": "test-set-query", "gallery": "test-set-gallery",
    }
    splits: ClassVar[Tuple[str, ...]] = ("train", "val_query", "val_gallery", "query", "gallery")
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=75083, ids=450),
        "val_query": SplitStats(images=4976),
        "val_gallery": SplitStats(images=17527),
        "query": SplitStats(images=17149),
        "gallery": SplitStats(images=63672),
    }
    homepage: ClassVar[str] = "https://github.com/PengBoXiangShang/deepchange"
    access: ClassVar[str] = ("DeepChange requires a signed access agreement: download DeepChangeAccessAgreement.pdf "
                             "from https://github.com/PengBoXiangShang/deepchange, sign it and email it from an "
                             "institutional address as the README says (non-commercial research only, no "
                             "redistribution, faces blocked in any dissemination; the link lasts 24 h)")
    licence_gated: ClassVar[bool] = True
    extra_columns: ClassVar[Tuple[str, ...]] = ("tracklet",)
    pattern: ClassVar[str] = r"^P(\d+)_C(\d+)_([^_.]+)_([^_.]+)_([^_.]+)_([^_.]+)\.(?:jpg|jpeg|png)$"
    num_cameras: ClassVar[int] = 17
    display_name: ClassVar[str] = "DeepChange"
    protocols: ClassVar[Tuple[Protocol, ...]] = (
        Protocol("val", "val_query", "val_gallery", "standard",
                 "DeepChange validation: standard rule with the tracklet id as the camera (CAL)",
                 camera_column="tracklet",
                 short="validation split; the tracklet id plays the camera (CAL)"),
        Protocol("test", "query", "gallery", "standard",
                 "DeepChange test: standard rule with the tracklet id as the camera (CAL); same-camera matches "
                 "from other tracklets count", camera_column="tracklet",
                 short="test split; the tracklet id plays the camera (CAL)"),
    )
    headline_protocol: ClassVar[str] = "test"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("test",)
    train_preset: ClassVar[Mapping[str, Any]] = {}  # run_code.sh has no DeepChange line
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def required_paths(self) -> List[str]:
        dirs = list(self.split_dirs.values())
        return sorted(dirs + [f"{d}-bbox.txt" for d in dirs])

    def _tracklets(self, list_file: Path) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            parts = [s.strip() for s in line.split(",")]
            if len(parts) != 2 or not parts[0] or not parts[1].lstrip("-").isdigit():
                raise DatasetError(f"{self.name}: {list_file}:{lineno}: expected '<image name>,<tracklet id>', "
                                   f"got {line!r}")
            name, tracklet = Path(parts[0]).name, int(parts[1])
            if out.setdefault(name, tracklet) != tracklet:
                raise DatasetError(f"{self.name}: {list_file}:{lineno}: {name} is listed twice with different "
                                   f"tracklets ({out[name]} and {tracklet})")
        return out

    def parse(self, root: Path) -> pd.DataFrame:
        regex = compile_basename(self.pattern)
        rows = _Rows()
        for split, folder in self.split_dirs.items():
            list_file = root / f"{folder}-bbox.txt"
            if not list_file.is_file():
                raise DatasetError(f"{self.name}: list file {list_file} is missing; it ships with the dataset "
                                   f"next to {folder}/ (re-extract the archive)")
            tracklets = self._tracklets(list_file)
            images = list_images(root / folder)
            names = {p.name for p in images}
            unlisted = [p.name for p in images if p.name not in tracklets]
            if unlisted:
                raise DatasetError(f"{self.name}: image {root / folder / unlisted[0]} is not listed in {list_file} "
                                   f"({len(unlisted)} unlisted image(s)); the image folder and its list file "
                                   f"do not match")
            orphans = sorted(n for n in tracklets if n not in names)
            if orphans:
                raise DatasetError(f"{self.name}: {list_file} lists {orphans[0]} but {root / folder} has no such "
                                   f"image ({len(orphans)} missing image(s)); re-extract the archive")
            group = _GROUPS[split]
            bad = []
            for p in images:
                m = regex.match(p.name)
                if not m:
                    bad.append(p.name)
                    continue
                pid, cam, day = int(m.group(1)), int(m.group(2)), m.group(3)
                check_range(self.name, p, "camera", cam, 1, self.num_cameras)
                rows.add(relpath=f"{folder}/{p.name}", split=split, pid=pid, camid=cam - 1,
                         tracklet=tracklets[p.name], clothes_key=f"{group}|{pid}|{day}")
            if bad:
                raise parse_failures(self.name, root / folder, bad, "P<pid>_C<cam>_<day>_<hour>_<f5>_<f6>.jpg")
        frame = rows.frame(["relpath", "split", "pid", "camid", "tracklet", "clothes_key"])
        frame["clothes_id"] = encode_clothes(frame["clothes_key"])
        frame["tracklet"] = frame["tracklet"].astype("int64")
        return frame.drop(columns="clothes_key")
