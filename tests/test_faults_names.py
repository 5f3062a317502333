"""Names from the config that become path components: refused at start-up unless each is one plain folder name.

An experiment's name is a folder of every run (``results/{dataset}/runs/{experiment}/...``, the training
state, the logs, the figures). A name with ``../`` made training write model.pt, the training state,
metrics and ranks outside the working folder; one with a regex character broke the DAG with
Snakemake's own message; a very long one passed ``-n`` and failed the real run with a traceback. Each
case now ends at start-up in one line naming the key and the rule, before any job runs.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Set

import pytest
import yaml

from maskcl.config import validate_config
from maskcl.errors import ConfigError
from maskcl.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())
TINY = ROOT / "tests" / "data" / "config_tiny.yaml"
RULE = ("rename it: an experiment's name is a folder name (results/<dataset>/runs/<name>/): letters, digits, _ and "
        "-, starting with a letter, at most 64 characters")

#: Names that would leave their folder, break a wildcard's regex or not be one plain folder name.
BAD_NAMES = ["../escape", "../../../../escape", "a/b", "/abs", "..", ".hidden", "a+b", "a.b", "(x)", "a|b", "a b",
             "1run", "_x", "-x", "maskcl\n", "mäskcl", ""]


def _with_experiment(name: str, base: Dict[str, Any] = DEFAULT) -> Dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg["experiments"] = {**cfg.get("experiments", {}), name: {"method": "untrained"}}
    return cfg


def _error(cfg: Dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        build_plan(validate_config(cfg))
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ unit level

@pytest.mark.parametrize("name", BAD_NAMES)
def test_experiment_name_that_is_not_a_plain_folder_name_is_refused(name):
    assert _error(_with_experiment(name)) == f"config.yaml: key experiments: the name {name!r} is not allowed; {RULE}"


def test_experiment_name_length_limit():
    ok = "a" * 64
    plan = build_plan(validate_config(_with_experiment(ok)))
    assert plan.run("synthcc", ok, 0).run_dir == f"results/synthcc/runs/{ok}/none/seed0"
    msg = _error(_with_experiment("a" * 300))
    assert msg == f"config.yaml: key experiments: the name '{'a' * 40}...' is 300 characters long; {RULE}"
    assert "65 characters long" in _error(_with_experiment("a" * 65))


def test_names_of_the_shipped_configs_still_pass():
    for name in ("maskcl_cosine", "untrained_random", "supervised_e48", "Run-2_b"):
        plan = build_plan(validate_config(_with_experiment(name)))
        assert plan.run("synthcc", name, 0).file("model.pt") == f"results/synthcc/runs/{name}/none/seed0/model.pt"


def test_names_that_differ_only_in_case_would_share_a_folder():
    msg = _error(_with_experiment("MaskCL"))
    assert msg == ("config.yaml: key experiments.MaskCL: the name differs from experiments.maskcl only in case, and "
                   "on a case-insensitive file system (macOS, Windows) both would write "
                   "results/<dataset>/runs/maskcl; rename one")


def test_plan_refuses_a_component_that_is_not_one_folder_name_even_unvalidated():
    # build_plan is the last guard: a config that skipped validate_config still never yields such a path
    cfg = validate_config(copy.deepcopy(DEFAULT))
    bad = copy.deepcopy(cfg)
    bad["experiments"]["../../x"] = {"method": "untrained", "train": {}}
    with pytest.raises(ConfigError, match=r"^experiment '\.\./\.\./x' cannot be a folder name under results/"):
        build_plan(bad)
    bad = copy.deepcopy(cfg)
    bad["seeds"] = [-1]
    with pytest.raises(ConfigError, match=r"^seed '-1' cannot be a folder name under results/"):
        build_plan(bad)


def test_seeds_and_input_size_are_bounded():
    msg = _error({**copy.deepcopy(DEFAULT), "seeds": [2**32]})
    assert msg.startswith("config.yaml: key seeds.0: 4294967296 is greater than the maximum of 4294967295")
    build_plan(validate_config({**copy.deepcopy(DEFAULT), "seeds": [2**32 - 1]}))
    msg = _error({**copy.deepcopy(DEFAULT), "seeds": [0, 1, 0]})
    assert msg == "config.yaml: key seeds: [0, 1, 0] has non-unique elements; write each value once (a repeated " \
                  "one would not add a run, only hide a typo)"
    cfg = copy.deepcopy(DEFAULT)
    cfg["train"]["height"] = 10**40  # the warm-up folder is <arch>-<height>x<width>
    assert _error(cfg).startswith(f"config.yaml: key train.height: {10**40} is greater than the maximum of 4096")


def test_a_pattern_ends_at_the_end_of_the_value():
    # Python's `$` also matches before a final newline; JSON Schema's does not
    cfg = copy.deepcopy(DEFAULT)
    cfg["train"]["device"] = "cpu\n"
    assert _error(cfg).startswith("config.yaml: key train.device: 'cpu\\n' does not match")
    cfg["train"]["device"] = "cuda:1"
    validate_config(cfg)


# ---------------------------------------------------------------------------------- Snakemake start-up

def _snakemake(work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", "--workflow-profile",
           str(ROOT / "profiles" / "default"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), out
    assert "Traceback" not in out
    return errors[0]


def _tree(root: Path, skip: Path) -> Set[str]:
    """Every path under ``root`` outside ``skip``, with its size (a file written or grown shows)."""
    out = set()
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        for f in dirs + files:
            p = Path(folder) / f
            out.add(f"{p.relative_to(root)}:{p.stat().st_size if p.is_file() else 'dir'}")
    return out


@pytest.mark.parametrize("name", ["../../../../escape", "a+b", "x" * 300], ids=["dotdot", "regex", "long"])
def test_dry_run_refuses_the_name_with_one_line(tmp_path, name):
    work = tmp_path / "wd"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(_with_experiment(name)))
    line = _one_error(_snakemake(work, "-n"))
    assert "key experiments: the name" in line and line.endswith(RULE), line
    assert not (work / "results").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("name", ["../escape", "../../../../escape"])
def test_real_run_with_a_name_that_leaves_the_folder_writes_nothing_outside(tmp_path, name):
    """A real tiny SynthCC DAG (no -n): the name is refused before any job, and nothing appears outside the
    working folder (``../../../../escape`` is ``<tmp>/escape`` from a run folder, ``../escape`` is
    ``results/synthcc/escape``)."""
    work = tmp_path / "wd"
    work.mkdir()
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"] = {name: {"method": "untrained"}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    outside = (tmp_path, work)
    before = _tree(*outside)
    line = _one_error(_snakemake(work, timeout=900))
    assert f"the name {name!r} is not allowed" in line
    assert _tree(*outside) == before
    assert not (work / "results").exists() and not (work / "logs").exists()
