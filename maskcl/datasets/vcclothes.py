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
from typing import Any, ClassVar, Dict, Mapping, Tuple

import pandas as pd

from .base import ReIDDataset, SplitStats, parse_outfit_files
from .protocol import Protocol

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
    display_name: ClassVar[str] = "VC-Clothes"
    protocols: ClassVar[Tuple[Protocol, ...]] = (
        Protocol("general", "query", "gallery", "standard", "VC-Clothes all cameras, general (standard rule)",
                 short="standard rule, all cameras; same-identity same-camera images excluded"),
        Protocol("sc", "query", "gallery", "sc", "VC-Clothes all cameras, same-clothes rule",
                 short="same-clothes rule, all cameras"),
        Protocol("cc", "query", "gallery", "cc",
                 "VC-Clothes all cameras, cloth-changing rule (the official MaskCL protocol)",
                 short="clothes-changing rule, all cameras (the official MaskCL protocol)"),
        Protocol("cams23", "query", "gallery", "standard",
                 "VC-Clothes cameras 2 & 3 (camid 1 & 2), same clothes (CAL vcclothes_sc): both sides restricted, "
                 "standard rule", cameras=(1, 2),
                 short="cameras 2 and 3 only, same clothes (CAL vcclothes_sc)"),
        Protocol("cams34", "query", "gallery", "standard",
                 "VC-Clothes cameras 3 & 4 (camid 2 & 3), clothes change (CAL vcclothes_cc): both sides restricted, "
                 "standard rule", cameras=(2, 3),
                 short="cameras 3 and 4 only, clothes change (CAL vcclothes_cc)"),
    )
    headline_protocol: ClassVar[str] = "cc"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("cc", "general")
    train_preset: ClassVar[Mapping[str, Any]] = {"iters": 200, "allknn": 3}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def parse(self, root: Path) -> pd.DataFrame:
        return parse_outfit_files(self.name, root, self.split_dirs, self.pattern, ("pid", "cam", "outfit"),
                                  self.num_cameras, "<pid>-<cam>-<clothes>-<index>.jpg")
