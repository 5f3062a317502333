"""LTCC (Qian et al., ACCV 2020, "Long-Term Cloth-Changing Person Re-identification").

Layout: ``LTCC_ReID/{train,query,test}/*.png`` (the gallery folder is named ``test``) plus optional
``info/cloth-{change,unchange}_id_{train,test}.txt`` (one integer pid per line).
File names: ``<pid>_<outfit>_c<cam>_<frame>.png`` with cameras 1..12, not zero-padded.
Official counts: 152 ids, 12 cameras, 17,119 images; train 77 ids / 9,576; query 75 ids / 493;
gallery (``test``) 75 ids / 7,050.
Homepage: https://naiq.github.io/LTCC_Perosn_ReID.html (access by request to the authors).

camid = cam − 1. Clothes are keyed by (split group, pid, outfit) with split groups ``train`` and
``test`` (query + gallery): outfit numbers restart for every person, so outfit 1 of two people are
two clothes. ``cloth_changing`` marks identities listed in ``info/cloth-change_id_*.txt``; without
that file it is derived (the identity shows more than one outfit within its split group) and
``frame.attrs["cloth_changing_source"]`` says which, per split group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Set, Tuple

import pandas as pd

from ..errors import DatasetError
from .base import ReIDDataset, SplitStats, parse_outfit_files
from .protocol import Protocol

__all__ = ["LTCC", "ltcc_protocols"]


def ltcc_protocols(label: str) -> Tuple[Protocol, ...]:
    """LTCC's three protocols, worded for ``label`` (SynthCC shares LTCC's layout and rules)."""
    return (
        Protocol("general", "query", "gallery", "standard",
                 f"{label} general (standard): all queries vs all gallery images; junk = same id & same camera",
                 short="standard rule: all queries vs all gallery images; same-identity same-camera images "
                       "excluded"),
        Protocol("cc", "query", "gallery", "cc",
                 f"{label} cloth-changing (CAL): all queries vs all gallery images; junk = same id & (same camera "
                 "or same clothes); cloth-consistent ids stay as distractors and their queries are skipped",
                 short="clothes-changing (CAL): every gallery image kept as a distractor; same-identity images "
                       "with the same clothes or camera excluded"),
        Protocol("cc_maskcl", "query", "gallery", "cc",
                 f"{label} cloth-changing as in the official MaskCL code: query and gallery restricted to "
                 "cloth-changing identities (info/cloth-change_id_test.txt), then the cc rule",
                 cloth_changing_only=True,
                 short="clothes-changing as in the official MaskCL code: query and gallery restricted to "
                       "clothes-changing identities, then the clothes-changing rule"),
    )


class LTCC(ReIDDataset):
    name: ClassVar[str] = "ltcc"
    dirnames: ClassVar[Tuple[str, ...]] = ("LTCC_ReID", "LTCC", "ltcc")
    split_dirs: ClassVar[Dict[str, str]] = {"train": "train", "query": "query", "gallery": "test"}
    official: ClassVar[Dict[str, SplitStats]] = {
        "train": SplitStats(images=9576, ids=77),
        "query": SplitStats(images=493, ids=75),
        "gallery": SplitStats(images=7050, ids=75),
    }
    homepage: ClassVar[str] = "https://naiq.github.io/LTCC_Perosn_ReID.html"
    access: ClassVar[str] = ("LTCC is distributed by its authors on request (reportedly against a signed release "
                             "agreement sent by email): see https://naiq.github.io/LTCC_Perosn_ReID.html")
    licence_gated: ClassVar[bool] = True
    extra_columns: ClassVar[Tuple[str, ...]] = ("outfit", "cloth_changing")
    pattern: ClassVar[str] = r"^(\d+)_(\d+)_c(\d+)(?:_[^.]*)?\.(?:png|jpg|jpeg)$"
    num_cameras: ClassVar[int] = 12
    display_name: ClassVar[str] = "LTCC"
    protocols: ClassVar[Tuple[Protocol, ...]] = ltcc_protocols("LTCC")
    headline_protocol: ClassVar[str] = "cc"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("cc", "general")
    train_preset: ClassVar[Mapping[str, Any]] = {"iters": 200, "allknn": 10}
    ground_truth_parsing: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def _info_ids(self, root: Path, kind: str, which: str) -> Optional[Set[int]]:
        f = root / "info" / f"cloth-{kind}_id_{which}.txt"
        if not f.is_file():
            return None
        ids: Set[int] = set()
        for lineno, line in enumerate(f.read_text().splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                ids.add(int(line))
            except ValueError:
                raise DatasetError(f"{self.name}: {f}:{lineno}: expected one integer person id per line, "
                                   f"got {line!r}") from None
        return ids

    def parse(self, root: Path) -> pd.DataFrame:
        frame = parse_outfit_files(self.name, root, self.split_dirs, self.pattern, ("pid", "outfit", "cam"),
                                   self.num_cameras, "<pid>_<outfit>_c<cam>_<frame>.png")
        flags, source = self._cloth_changing(root, frame)
        frame["cloth_changing"] = flags
        frame.attrs["cloth_changing_source"] = source
        return frame

    def _cloth_changing(self, root: Path, frame: pd.DataFrame) -> Tuple[pd.Series, str]:
        is_train = frame["split"] == "train"
        out = pd.Series(False, index=frame.index)
        sources = []
        for which, mask in (("train", is_train), ("test", ~is_train)):
            listed = self._info_ids(root, "change", which)
            unchanged = self._info_ids(root, "unchange", which)
            if listed is not None and unchanged is not None and listed & unchanged:
                both = sorted(listed & unchanged)[:5]
                raise DatasetError(f"{self.name}: {root / 'info'}: person id(s) {both} are listed in both "
                                   f"cloth-change_id_{which}.txt and cloth-unchange_id_{which}.txt; fix the "
                                   f"info files")
            sub = frame[mask]
            if listed is not None:
                out[mask] = sub["pid"].isin(listed)
                sources.append(f"{which}=info")
            else:
                n_outfits = sub.groupby("pid")["outfit"].nunique()
                out[mask] = sub["pid"].map(n_outfits > 1)
                sources.append(f"{which}=derived")
        return out.astype(bool), ",".join(sources)
