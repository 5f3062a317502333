"""Content digests of a workspace's results, to show that a change moved no number (issue #29).

Every run's ``metrics.json`` (all but its provenance: times, versions, hosts), ``ranks.npz``,
``train_log.csv`` (all but its timing columns), and every table and figure data file under
``results/tables`` and ``results/figures`` (the workspace's own path replaced by ``<ws>``). With two
workspaces, compares them file by file and exits 1 on a difference.

    python bench/dag_digests.py WORKSPACE [OTHER_WORKSPACE]
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pandas as pd

TIMING = ["cluster_s", "data_s", "step_s", "epoch_s"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def digests(ws: Path) -> Dict[str, str]:
    ws = ws.resolve()
    res = ws / "results"
    out: Dict[str, str] = {}
    for f in sorted(res.glob("*/runs/**/metrics.json")):
        doc = json.loads(f.read_text())
        doc.pop("provenance", None)
        out[str(f.relative_to(ws))] = _sha(json.dumps(doc, sort_keys=True).encode())
    for f in sorted(res.glob("*/runs/**/ranks.npz")):
        with np.load(f) as z:
            out[str(f.relative_to(ws))] = _sha(b"".join(k.encode() + z[k].tobytes() for k in sorted(z.files)))
    for f in sorted(res.glob("*/runs/**/train_log.csv")):
        log = pd.read_csv(f)
        buf = io.StringIO()
        log.drop(columns=[c for c in TIMING if c in log]).to_csv(buf, index=False)
        out[str(f.relative_to(ws))] = _sha(buf.getvalue().encode())
    for sub in ("tables", "figures"):
        for f in sorted((res / sub).rglob("*")):
            if f.is_file() and f.suffix in (".md", ".tex", ".csv"):
                out[str(f.relative_to(ws))] = _sha(f.read_text().replace(str(ws), "<ws>").encode())
    return out


def main() -> int:
    a = digests(Path(sys.argv[1]))
    if len(sys.argv) < 3:
        for k, v in a.items():
            print(v, k)
        return 0
    b = digests(Path(sys.argv[2]))
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    print(f"{len(a)} / {len(b)} files; {len(differ)} differ")
    for k in differ:
        print(f"  {k}: {a.get(k)} vs {b.get(k)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
