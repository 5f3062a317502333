"""Shared test fixtures: the project root and fake dataset trees built from example paths."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = Path(__file__).parent / "data" / "dataset_layouts.txt"


def layout_paths() -> Dict[str, List[str]]:
    """Example relative paths per dataset section of tests/data/dataset_layouts.txt."""
    sections: Dict[str, List[str]] = {}
    current = None
    for line in LAYOUTS.read_text().splitlines():
        line = line.strip()
        if line.startswith("## "):
            current = line[3:].split("(")[0].strip()
            sections[current] = []
        elif line and not line.startswith("#") and current:
            sections[current].append(line)
    return sections


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT
