"""The results layout has one owner (maskcl/layout.py) and the package imports only downward (issue #27)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from maskcl import layout as L
from maskcl.plan import build_plan
from maskcl.config import validate_config
from maskcl.repair import manifest_target, model_repair_hint

ROOT = Path(__file__).resolve().parents[1]



def _layers() -> Dict[str, int]:
    """docs/architecture.md's layer table: a top-level module or package of maskcl -> its layer."""
    out: Dict[str, int] = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"^\| (\d) \| (.*?) \|", line)
        if m:
            for name in re.findall(r"`([a-z_]+)(?:\.py|/)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


LAYERS = _layers()


def _string_literals(path: Path) -> Iterator[Tuple[int, str]]:
    """Every string literal of a Python-syntax file that is not a docstring (comments are not strings)."""
    toks = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    prev = tokenize.NEWLINE
    for tok in toks:
        if tok.type == tokenize.STRING and prev not in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                                        tokenize.NL):
            yield tok.start[0], tok.string
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            prev = tok.type


def test_no_results_path_is_written_outside_the_layout():
    files = [p for p in (ROOT / "maskcl").rglob("*.py") if p.name != "layout.py"]
    files += list((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"] + list((ROOT / "workflow_scripts").glob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{line}: {text[:60]}" for p in files for line, text in _string_literals(p)
             if "results/" in text]
    assert found == [], "write the path in maskcl/layout.py and use it:\n" + "\n".join(found)


def test_the_layout_fills_and_matches_its_patterns():
    run = dict(dataset="synthcc", experiment="maskcl", masks="groundtruth-silhouette", seed=2)
    model = L.fill(L.RUN_MODEL, **run)
    assert model == "results/synthcc/runs/maskcl/groundtruth-silhouette/seed2/model.pt"
    assert L.pattern_regex(L.RUN_MODEL).match(model)
    assert not L.pattern_regex(L.RUN_MODEL).match("results/synthcc/runs/maskcl/a/b/seed2/model.pt")   # one component
    assert not L.pattern_regex(L.RUN_MODEL).match("results/synthcc/runs/maskcl/none/seedx/model.pt")
    assert f"--forcerun {model}" in model_repair_hint(model)
    assert manifest_target("ltcc") == L.fill(L.MANIFEST, dataset="ltcc")
    # the plan's paths are the layout's
    cfg = validate_config({"datasets": ["synthcc"], "seeds": [2], "train": {"pretrained": "ssl"},
                           "masks": {"sources": ["groundtruth"], "train_source": "groundtruth"}})
    rec = build_plan(cfg).run("synthcc", "maskcl", 2)
    assert rec.run_dir == L.fill(L.RUN_DIR, **run) and rec.state_dir == L.fill(L.STATE_DIR, **run)
    assert rec.mask_index == L.fill(L.MASK_INDEX, dataset="synthcc", source="groundtruth")


def _imports(path: Path) -> List[Tuple[int, str]]:
    """The maskcl top-level modules ``path`` imports (module level and lazy), with line numbers."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT / "maskcl").with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # ``from . import x`` at the package root
                    parts = [a.name for a in node.names]
                out.append((node.lineno, parts[0]))
            elif node.module and node.module.split(".")[0] == "maskcl":
                rest = node.module.split(".")[1:] or [a.name for a in node.names]
                out.append((node.lineno, rest[0]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "maskcl" and len(a.name.split(".")) > 1:
                    out.append((node.lineno, a.name.split(".")[1]))
    return out


def test_every_module_imports_only_its_layer_or_below():
    tops = {p.stem if p.is_file() else p.name for p in (ROOT / "maskcl").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))}
    assert tops == set(LAYERS), f"add {tops - set(LAYERS)} to docs/architecture.md's layers and here"
    upward: List[str] = []
    for path in (ROOT / "maskcl").rglob("*.py"):
        rel = path.relative_to(ROOT / "maskcl")
        if rel.parts[0] == "__init__.py":
            continue
        mine = LAYERS[rel.parts[0].removesuffix(".py")]
        for line, top in _imports(path):
            if top in LAYERS and LAYERS[top] > mine:
                upward.append(f"maskcl/{rel}:{line} imports {top} (layer {LAYERS[top]} above {mine})")
    assert upward == [], "\n".join(upward)


def test_no_import_circle_between_the_packages():
    edges: Dict[str, set] = {top: set() for top in LAYERS}
    for path in (ROOT / "maskcl").rglob("*.py"):
        rel = path.relative_to(ROOT / "maskcl")
        if rel.parts[0] == "__init__.py":
            continue
        me = rel.parts[0].removesuffix(".py")
        edges[me] |= {top for _, top in _imports(path) if top in LAYERS and top != me}
    done: set = set()

    def visit(node: str, stack: List[str]) -> None:
        if node in stack:
            pytest.fail("import circle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(edges[node]):
            visit(nxt, stack + [node])
        done.add(node)

    for top in sorted(edges):
        visit(top, [])
