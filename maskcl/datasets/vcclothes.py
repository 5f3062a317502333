"""VC-Clothes (Wan et al., CVPR Workshops 2020, "When Person Re-identification Meets Changing
Clothes"): synthetic people rendered in GTA5.

Layout: ``VC-Clothes/{train,query,gallery}/*.jpg``; some archives extract one level deeper
(``VC-Clothes/VC-Clothes/...``), which ``find_root`` accepts.
File names: ``<pid>-<cam>-<clothes>-<index>.jpg``, four dash-separated integers, cameras 1..4.

camid = cam − 1. Clothes are keyed by (split group, pid, clothes field) with split groups ``train``
and ``test`` (query + gallery); the raw clothes field is kept in the ``outfit`` column. The
protocol subsets (cameras 2 & 3 same clothes, 3 & 4 changed clothes) are the evaluator's business.

Official counts: 512 ids, 4 cameras, 19,060 images; train 256 ids / 9,449; test 256 ids:
query 1,020, gallery 8,591.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Dict, Tuple

import pandas as pd

from .base import (ReIDDataset, SplitStats, _Rows, check_range, compile_basename, encode_clothes, list_images,
                   parse_failures)

__all__ = ["VCClothes"]


class VCClothes(ReIDDataset):
    name: ClassVar[str] = "vcclothes"
    dirnames: ClassVar[Tuple[str, ...]] = ("VC-Clothes", "VC_Clothes", "vcclothes", "vc-clothes")
    split_dirs: ClassVar[Dict[str, str]] = {"train": "train", "query": "query", "gallery": "gallery"}
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=9449, ids=256),
        "query": SplitStats(images=1020),
        "gallery": SplitStats(images=8591),
    }
    homepage: ClassVar[str] = "https://wanfb.github.io/dataset.html"
    access: ClassVar[str] = ("VC-Clothes is linked from https://wanfb.github.io/dataset.html; check the page for "
                             "the request procedure and terms")
    extra_columns: ClassVar[Tuple[str, ...]] = ("outfit",)
    pattern: ClassVar[str] = r"^(\d+)-(\d+)-(\d+)-(\d+)\.(?:jpg|jpeg|png)$"
    num_cameras: ClassVar[int] = 4

    def parse(self, root: Path) -> pd.DataFrame:
        regex = compile_basename(self.pattern)
        rows = _Rows()
        for split, folder in self.split_dirs.items():
            group = "train" if split == "train" else "test"
            bad = []
            for p in list_images(root / folder):
                m = regex.match(p.name)
                if not m:
                    bad.append(p.name)
                    continue
                pid, cam, outfit = int(m.group(1)), int(m.group(2)), int(m.group(3))
                check_range(self.name, p, "camera", cam, 1, self.num_cameras)
                rows.add(relpath=f"{folder}/{p.name}", split=split, pid=pid, camid=cam - 1, outfit=outfit,
                         clothes_key=f"{group}|{pid}|{outfit}")
            if bad:
                raise parse_failures(self.name, root / folder, bad, "<pid>-<cam>-<clothes>-<index>.jpg")
        frame = rows.frame(["relpath", "split", "pid", "camid", "outfit", "clothes_key"])
        frame["clothes_id"] = encode_clothes(frame["clothes_key"])
        return frame.drop(columns="clothes_key")
