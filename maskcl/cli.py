"""The ``maskcl`` command: use a trained ``model.pt`` outside the DAG.

``maskcl extract`` writes features for any images, ``maskcl rank`` ranks a query folder against a
gallery folder (a CSV and a picture like the report's retrieval grids), ``maskcl export-onnx`` writes
the network as ONNX, checked against torch. Every output is computed before anything is written and
written under a temporary name, then renamed: a failed command leaves no file that looks complete.
A user mistake ends in one ``ERROR:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .errors import InferenceError, MaskCLError

__all__ = ["main", "rank_folders", "read_image_list"]

log = logging.getLogger("maskcl")

#: An image whose height/width ratio is off the model's by more than this factor is not a person crop.
ASPECT_FACTOR = 2.0


def read_image_list(path: os.PathLike | str) -> List[Path]:
    """The images named in a list file: one path per line, ``#`` comments and blank lines skipped.

    A relative path is read from the list file's folder, so a list travels with its images.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InferenceError(f"{path}: list file not found; give a text file with one image path per line") from None
    except UnicodeDecodeError:
        raise InferenceError(f"{path}: not a text file; give a text file with one image path per line") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise InferenceError(f"{path}: the list names no image; give one image path per line")
    return out


def _expand(items: Sequence[str]) -> List[Path]:
    """Files as given; a folder becomes its images (sorted, recursively)."""
    from .inference import list_images

    out: List[Path] = []
    for item in items:
        p = Path(item)
        out.extend(list_images(p) if p.is_dir() else [p])
    return out


def _check_shapes(paths: Sequence[Path], input_size: Sequence[int], what: str) -> None:
    """Refuse images not shaped like a person crop for this model (a whole frame, a rotated crop)."""
    from .inference import image_size

    want = input_size[0] / input_size[1]
    for p in paths:
        h, w = image_size(p)
        ratio = h / w
        if ratio > want * ASPECT_FACTOR or ratio < want / ASPECT_FACTOR:
            raise InferenceError(f"{p}: the {what} image is {h}x{w} px (height x width), not shaped like the "
                                 f"{input_size[0]}x{input_size[1]} person crops this model reads; crop the person "
                                 f"first, or pass --any-size to rank it as it is")


def rank_folders(model, query: Sequence[Path], gallery: Sequence[Path], *, top: int, batch_size: int = 64,
                 flip: bool = False, workers: int = 0, progress: bool = False):
    """(ranking frame, distance matrix): each query's ``top`` nearest gallery images.

    Distances are squared Euclidean between L2-normalised features, the evaluate rule's default
    ranking (``evaluate.metric: euclidean``); ties keep the gallery order.
    """
    import pandas as pd

    from .evaluation.distance import pairwise_distance

    qf = model.embed(query, batch_size=batch_size, flip=flip, num_workers=workers, progress=progress)
    gf = model.embed(gallery, batch_size=batch_size, flip=flip, num_workers=workers, progress=progress)
    dist = pairwise_distance(qf, gf, "euclidean")
    k = min(int(top), len(gallery))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    rows = [{"query": str(q), "rank": j + 1, "gallery": str(gallery[g]), "distance": float(dist[i, g])}
            for i, q in enumerate(query) for j, g in enumerate(order[i])]
    return pd.DataFrame(rows, columns=["query", "rank", "gallery", "distance"]), dist


def _grid_frame(ranking, queries: int, columns: int):
    """The cells ``maskcl.reporting.retrieval.plot_retrieval`` draws, captioned with names and distances."""
    import pandas as pd

    cells = []
    for qi, (q, grp) in enumerate(list(ranking.groupby("query", sort=False))[:queries]):
        cells.append({"query": qi, "position": 0, "flag": "query", "path": q, "mask": "", "pid": None,
                      "ap": float("nan"), "caption": f"query {Path(q).name}"})
        for _, r in grp.head(columns).iterrows():
            cells.append({"query": qi, "position": int(r["rank"]), "flag": "unlabelled", "path": r["gallery"],
                          "mask": "", "pid": None, "ap": float("nan"),
                          "caption": f"{int(r['rank'])}: d={r['distance']:.3f}"})
    return pd.DataFrame(cells)


def _cmd_extract(args: argparse.Namespace) -> None:
    from .inference import load_model

    if bool(args.images) == bool(args.list):
        raise InferenceError("extract: give the images (files or folders) or --list FILE, not both and not neither")
    if Path(args.out).suffix != ".npz":
        raise InferenceError(f"--out {args.out}: the features file must end in .npz")
    paths = read_image_list(args.list) if args.list else _expand(args.images)
    model = load_model(args.model, device=args.device)
    feats = model.embed(paths, batch_size=args.batch_size, flip=args.flip, num_workers=args.workers,
                        progress=not args.quiet)
    from .io import atomic_path

    with atomic_path(args.out, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, features=feats, paths=np.array([str(p) for p in paths]), model=np.array(str(args.model)),
                 input_size=np.array(model.input_size), flip=np.array(bool(args.flip)))
    log.info("wrote %s: %d features of dim %d", args.out, feats.shape[0], feats.shape[1])


def _cmd_rank(args: argparse.Namespace) -> None:
    from .inference import list_images, load_model
    from .io import write_csv_atomic
    from .reporting.retrieval import plot_retrieval

    if args.top < 1:
        raise InferenceError(f"--top must be >= 1, got {args.top}")
    query, gallery = list_images(args.query), list_images(args.gallery)
    model = load_model(args.model, device=args.device)
    if not args.any_size:
        _check_shapes(query, model.input_size, "query")
        _check_shapes(gallery, model.input_size, "gallery")
    ranking, _ = rank_folders(model, query, gallery, top=args.top, batch_size=args.batch_size, flip=args.flip,
                              workers=args.workers, progress=not args.quiet)
    out = Path(args.out)
    grid = _grid_frame(ranking, args.grid_queries, min(args.top, 10))
    title = (f"{model.meta.get('method')}: top {min(args.top, 10)} of {len(gallery)} gallery images, "
             f"{grid['query'].nunique()} of {len(query)} queries")
    plot_retrieval(grid, out / "ranking_grid.png", title=title)
    write_csv_atomic(out / "ranking.csv", ranking)  # last: a ranking.csv is never without its grid
    log.info("wrote %s (%d queries x top %d) and %s", out / "ranking.csv", len(query), min(args.top, len(gallery)),
             out / "ranking_grid.png")


def _cmd_export(args: argparse.Namespace) -> None:
    from .inference import export_onnx, load_model

    if Path(args.out).suffix != ".onnx":
        raise InferenceError(f"{args.out}: the ONNX file must end in .onnx")
    model = load_model(args.model, device="cpu")
    diff = export_onnx(model, args.out, opset=args.opset)
    log.info("wrote %s: images (N x 3 x %d x %d) -> L2-normalised features (N x %d); onnxruntime matches torch "
             "within %.2g", args.out, *model.input_size, model.dim, diff)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskcl", description="Use a trained model.pt outside the pipeline.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", default="auto", help="auto (a GPU when one is visible), cpu, cuda, cuda:N")
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--workers", type=int, default=0, help="DataLoader workers reading the images")
        sp.add_argument("--flip", action="store_true",
                        help="add the flipped image's features (evaluate.flip; off in the official evaluator)")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("extract", help="features of images, in input order, into an .npz")
    e.add_argument("model", help="a model.pt written by the train rule")
    e.add_argument("images", nargs="*", help="image files or folders (their images, sorted)")
    e.add_argument("--list", help="a text file with one image path per line (relative to the file's folder)")
    e.add_argument("--out", required=True, help="FEATURES.npz: arrays features (N x D float32) and paths")
    common(e)
    e.set_defaults(func=_cmd_extract)

    r = sub.add_parser("rank", help="rank a query folder against a gallery folder")
    r.add_argument("model")
    r.add_argument("--query", required=True, help="folder of query images")
    r.add_argument("--gallery", required=True, help="folder of gallery images")
    r.add_argument("--top", type=int, default=10, help="gallery images kept per query in ranking.csv")
    r.add_argument("--grid-queries", type=int, default=8, help="queries drawn in ranking_grid.png")
    r.add_argument("--any-size", action="store_true",
                   help="rank images whatever their shape (default: refuse ones not shaped like a person crop)")
    r.add_argument("--out", required=True, help="folder for ranking.csv and ranking_grid.png (+ its data CSV)")
    common(r)
    r.set_defaults(func=_cmd_rank)

    x = sub.add_parser("export-onnx", help="the RGB network as ONNX (dynamic batch), checked in onnxruntime")
    x.add_argument("model")
    x.add_argument("out", help="OUT.onnx")
    x.add_argument("--opset", type=int, default=18)
    x.set_defaults(func=_cmd_export)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; a user mistake or an OS failure is one ``ERROR:`` line on stderr and status 1."""
    from .workflow import describe_os_error

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except MaskCLError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ERROR: {describe_os_error(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
