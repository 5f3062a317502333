"""Loader for a generated SynthCC folder: LTCC's layout and rules plus ground-truth parsing.

SynthCC has no published counts: they depend on the preset and overrides. The loader reads them from
the dataset's own ``synthcc.json`` instead: ``parse`` fails if a split holds a different number of
images than was generated (a truncated or edited copy), and afterwards ``official`` holds the
generated counts, so ``official_differences`` works as for the real datasets. The camera range is
also taken from ``synthcc.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Tuple

import pandas as pd

from ...errors import DatasetError
from ...io import read_json
from ...repair import force_command, manifest_target
from ..base import SplitStats
from ..ltcc import LTCC, ltcc_protocols
from ..protocol import Protocol
from .generate import generate_synthcc

__all__ = ["SynthCC"]

#: Reruns the download job, which regenerates a SynthCC folder whose files are missing or damaged.
_REGENERATE = force_command(manifest_target("synthcc"))


class SynthCC(LTCC):
    """SynthCC (generated): ``{train,query,test}/<pid>_<outfit>_c<cam>_<frame>.png`` + ``parsing/``."""

    name: ClassVar[str] = "synthcc"
    dirnames: ClassVar[Tuple[str, ...]] = ("synthcc", "SynthCC")
    official: ClassVar[Dict[str, SplitStats]] = {}
    homepage: ClassVar[str] = ""
    access: ClassVar[str] = ("SynthCC is generated locally by maskcl.datasets.synthcc.generate_synthcc "
                             "(data.synthcc in config.yaml); nothing is downloaded")
    extra_columns: ClassVar[Tuple[str, ...]] = ("outfit", "cloth_changing", "parsing")
    num_cameras: ClassVar[int] = 99
    meta_file: ClassVar[str] = "synthcc.json"
    display_name: ClassVar[str] = "SynthCC"
    protocols: ClassVar[Tuple[Protocol, ...]] = ltcc_protocols("SynthCC")
    headline_protocol: ClassVar[str] = "cc"
    comparison_protocols: ClassVar[Tuple[str, ...]] = ("cc", "general")
    train_preset: ClassVar[Mapping[str, Any]] = {"allknn": 3}  # 3 outfits per identity, synthetic: VC-Clothes' (docs/training.md)
    ground_truth_parsing: ClassVar[bool] = True
    generated: ClassVar[bool] = True

    def generate(self, target: Path, params: Mapping[str, Any], workers: int = 1) -> Path:
        """Generate SynthCC from ``data.synthcc`` (``preset``, ``seed``, ``overrides``) into ``target``."""
        return generate_synthcc(target, preset=params.get("preset", "default"), seed=int(params.get("seed", 0)),
                                overrides=params.get("overrides") or None, workers=max(1, int(workers)))

    def required_paths(self) -> List[str]:
        return sorted(set(super().required_paths()) | {self.meta_file})

    def _meta(self, root: Path) -> dict:
        f = root / self.meta_file
        try:
            meta = read_json(f)
            meta["parameters"]["config"]["n_cameras"]
            meta["counts"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{self.name}: {f} is missing or unreadable ({type(e).__name__}); delete {root} "
                               f"and regenerate SynthCC: {_REGENERATE}") from None
        return meta

    def parse(self, root: Path) -> pd.DataFrame:
        meta = self._meta(root)
        self.num_cameras = int(meta["parameters"]["config"]["n_cameras"])  # type: ignore[misc]
        frame = super().parse(root)
        frame["parsing"] = ["parsing/" + r for r in frame["relpath"]]
        for folder in sorted(set(self.split_dirs.values())):
            d = root / "parsing" / folder
            have = {p.name for p in d.iterdir()} if d.is_dir() else set()
            names = [r.split("/", 1)[1] for r in frame["relpath"] if r.startswith(folder + "/")]
            missing = [n for n in names if n not in have]
            if missing:
                raise DatasetError(f"{self.name}: {len(missing)} ground-truth label map(s) missing in {d}, e.g. "
                                   f"{missing[0]}; regenerate SynthCC: {_REGENERATE}")
        official = {}
        for split, c in meta["counts"].items():
            official[split] = SplitStats(images=c.get("images"), ids=c.get("ids"), cameras=c.get("cameras"),
                                         clothes=c.get("clothes"))
            got = int((frame["split"] == split).sum())
            if c.get("images") is not None and got != c["images"]:
                raise DatasetError(f"{self.name}: split {split!r} holds {got} images but {root / self.meta_file} "
                                   f"says {c['images']}; regenerate SynthCC: {_REGENERATE}")
        self.official = official  # type: ignore[misc]
        return frame
