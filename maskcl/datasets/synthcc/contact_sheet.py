"""A labelled overview image: a few identities × their outfits × two cameras, parsing beside each.

Meant for a human glance at a generated dataset (is the identity recognisable across outfits, do
the labels sit on the figure?); it reads the written files, so it shows exactly what was saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .palette import colourise_labels
from .plan import DatasetPlan, ImageSpec

__all__ = ["contact_sheet"]


def _pick_ids(plan: DatasetPlan, n_ids: int) -> List[int]:
    changing = set(plan.changing_ids)
    test_cc = [p for p in plan.test_ids if p in changing]
    train_cc = [p for p in plan.train_ids if p in changing]
    test_uc = [p for p in plan.test_ids if p not in changing]
    half = n_ids // 2
    picked = test_cc[:half] + train_cc[:n_ids - half - (1 if test_uc else 0)] + test_uc[:1]
    for p in test_cc[half:] + train_cc + test_uc:
        if len(picked) >= n_ids:
            break
        if p not in picked:
            picked.append(p)
    return picked[:n_ids]


def contact_sheet(plan: DatasetPlan, root: Path, out: Path, n_ids: int = 6, cams_per_outfit: int = 2,
                  max_outfits: int = 3) -> None:
    """Write ``out`` (PNG) from the images under ``root``.

    Parameters
    ----------
    plan : DatasetPlan
    root : Path
        Dataset folder holding the images and ``parsing/``.
    out : Path
        Output PNG path.
    n_ids, cams_per_outfit, max_outfits : int
        Grid size: rows, and cameras × outfits per row.
    """
    first: Dict[Tuple[int, int, int], ImageSpec] = {}
    for s in plan.images():
        key = (s.pid, s.outfit, s.cam)
        if key not in first or s.index < first[key].index:
            first[key] = s
    h, w = plan.cfg.image_height, plan.cfg.image_width
    zoom = max(1, 128 // h)
    ch, cw = h * zoom, w * zoom
    cell_w, head, left = 2 * cw + 6, 14, 118
    n_cols = max_outfits * cams_per_outfit
    ids = _pick_ids(plan, n_ids)
    sheet = Image.new("RGB", (left + n_cols * cell_w, len(ids) * (ch + head + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    changing = set(plan.changing_ids)
    for r, pid in enumerate(ids):
        y = r * (ch + head + 4) + 4
        t = plan.identities[pid]
        group = "train" if pid in plan.train_ids else "test"
        n_out = len(plan.outfits[pid])
        lines = [f"id {pid:03d} ({group})", f"{n_out} outfits" if pid in changing else "1 outfit (no change)",
                 f"{t.hairstyle}, {t.height:.2f} m", f"hair {t.hair_colour}"]
        for i, line in enumerate(lines):
            draw.text((4, y + head + 4 + 13 * i), line, fill=(0, 0, 0), font=font)
        col = 0
        for o in plan.outfits[pid][:max_outfits]:
            for cam in plan.outfit_cameras[(pid, o.outfit)][:cams_per_outfit]:
                spec = first[(pid, o.outfit, cam)]
                img = np.asarray(Image.open(root / spec.relpath).convert("RGB"))
                lab = np.asarray(Image.open(root / "parsing" / spec.relpath))
                pair = np.concatenate([img, colourise_labels(lab)], 1)
                tile = Image.fromarray(pair).resize((2 * cw, ch), Image.Resampling.NEAREST)
                x = left + col * cell_w
                sheet.paste(tile, (x, y + head))
                draw.text((x, y), f"o{o.outfit} c{cam} {o.lower_type}", fill=(0, 0, 0), font=font)
                col += 1
    sheet.save(out, format="PNG", compress_level=6)
