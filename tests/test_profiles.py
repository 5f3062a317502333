"""The execution profiles: what each job asks the scheduler for, and how the two profiles combine.

Everything is read from Snakemake 9 itself (dry-runs of the default DAG in a temporary working
directory, with snakemake-executor-plugin-slurm installed; no SLURM needed), so the README's
statements about precedence are checked, not assumed. The dry-runs start together to save time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "profiles" / "slurm"
DEFAULT = ROOT / "profiles" / "default"
GPU_PARTITION, CPU_PARTITION, ACCOUNT = "CHANGE_ME_gpu_partition", "CHANGE_ME_cpu_partition", "CHANGE_ME_account"

LOCAL_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
root, work = Path(sys.argv[1]), Path(sys.argv[2])
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=root / "Snakefile", workdir=work,
                      config_settings=ConfigSettings(configfiles=[root / "config.yaml"]))
    w = wf._workflow  # parsed rules; `localrule: True` and `localrules:` both end up in _localrules
    print("LOCAL=" + json.dumps(sorted(r.name for r in w.rules if r.name in w._localrules)))
"""


def _snakemake(work: Path, *args: str) -> List[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(ROOT / "config.yaml"), "-n", *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, subprocess.CompletedProcess]:
    """Every Snakemake call of this file, started at once (each builds the DAG, ~3 s)."""
    cmds = {
        # the documented SLURM call: the slurm profile replaces profiles/default
        "slurm": _snakemake(tmp_path_factory.mktemp("slurm"), "--workflow-profile", str(SLURM)),
        # the tempting one: profiles/default is loaded on top and wins key by key
        "slurm_as_global": _snakemake(tmp_path_factory.mktemp("glob"), "--profile", str(SLURM),
                                      "--set-resources", "train:gpu=2"),
        # local: profiles/default caps gpu at 1 unless --resources says otherwise
        "local_4gpu": _snakemake(tmp_path_factory.mktemp("local"), "--resources", "gpu=4",
                                 "--set-resources", "train:gpu=2"),
        "local_rules": [sys.executable, "-c", LOCAL_RULES, str(ROOT), str(tmp_path_factory.mktemp("api"))],
    }
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for k, c in cmds.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[k] = subprocess.CompletedProcess(cmds[k], p.returncode, stdout, stderr)
    return out


def jobs(proc: subprocess.CompletedProcess) -> List[dict]:
    """The jobs of a dry-run: rule, wildcards, threads and resources (values as printed)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: List[dict] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            found.append({"rule": m.group(1), "threads": 1, "resources": {}, "wildcards": ""})
        elif found and line.startswith("    threads: "):
            found[-1]["threads"] = int(line.split(": ", 1)[1])
        elif found and line.startswith("    wildcards: "):
            found[-1]["wildcards"] = line.split(": ", 1)[1]
        elif found and line.startswith("    resources: "):
            found[-1]["resources"] = dict(kv.split("=", 1) for kv in line.split(": ", 1)[1].split(", "))
    return found


def by_rule(found: List[dict]) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {}
    for j in found:
        out.setdefault(j["rule"], []).append(j)
    return out


def test_slurm_profile_requests_per_rule(runs):
    proc = runs["slurm"]
    assert f"Using workflow specific profile {SLURM}" in proc.stderr
    assert "profiles/default" not in proc.stderr
    rules = by_rule(jobs(proc))
    assert {r: len(js) for r, js in rules.items()} == {
        "download": 1, "parse": 1, "mask_quality": 1, "train": 2, "evaluate": 2, "tables": 1, "all": 1}
    for js in rules.values():
        for j in js:
            assert j["resources"]["slurm_account"] == ACCOUNT, j
    expected = {  # rule: (partition, cpus_per_task, gpu, mem_mb, runtime)
        "train": (GPU_PARTITION, "8", "1", "32000", "1440"),
        "evaluate": (GPU_PARTITION, "4", "1", "8000", "120"),
        "parse": (GPU_PARTITION, "4", "0", "4000", "120"),  # groundtruth masks: no network, no GPU
        "mask_quality": (CPU_PARTITION, "1", None, "4000", "60"),
    }
    for rule, (partition, cpus, gpu, mem, runtime) in expected.items():
        for j in rules[rule]:
            r = j["resources"]
            assert (r["slurm_partition"], r["cpus_per_task"], r.get("gpu"), r["mem_mb"], r["runtime"]) == \
                   (partition, cpus, gpu, mem, runtime), j
    assert {j["wildcards"] for j in rules["train"]} == {
        "dataset=synthcc, experiment=maskcl, masks=groundtruth-silhouette, seed=0",
        "dataset=synthcc, experiment=clustercontrast, masks=none, seed=0"}


def test_slurm_profile_threads_match_the_cpus_it_requests():
    prof = yaml.safe_load((SLURM / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and "cores" not in prof and "resources" not in prof
    cpus = {rule: res["cpus_per_task"] for rule, res in prof["set-resources"].items() if "cpus_per_task" in res}
    assert cpus == prof["set-threads"]
    # No GPU counts in the profile: the rules derive them from the config (device: cpu -> 0).
    assert not any("gpu" in res for res in prof["set-resources"].values())
    text = (SLURM / "config.yaml").read_text()
    assert {GPU_PARTITION, CPU_PARTITION, ACCOUNT} <= set(re.findall(r"CHANGE_ME_\w+", text))


def test_download_and_tables_run_on_the_submit_host(runs):
    proc = runs["local_rules"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("LOCAL="))
    assert line == 'LOCAL=["download", "tables"]'  # (`all` runs nothing)


def test_slurm_profile_given_as_profile_still_loads_the_default_one(runs):
    """Why the README says --workflow-profile: with --profile, profiles/default is merged on top."""
    proc = runs["slurm_as_global"]
    assert f"Using profiles {SLURM} and workflow specific profile" in proc.stderr
    assert "profiles/default" in proc.stderr
    train = by_rule(jobs(proc))["train"]
    ncpu = len(os.sched_getaffinity(0))
    for j in train:
        assert j["resources"]["gpu"] == "1"  # asked for 2: the default profile's `resources: gpu: 1` caps it
        assert j["threads"] == min(8, ncpu)  # the default profile's `cores: all` caps threads
    default = yaml.safe_load((DEFAULT / "config.yaml").read_text())
    assert default["resources"] == {"gpu": 1} and default["cores"] == "all"


def test_local_gpu_cap_is_raised_from_the_command_line(runs):
    proc = runs["local_4gpu"]
    assert f"Using workflow specific profile {DEFAULT}" in proc.stderr or \
           "Using workflow specific profile profiles/default" in proc.stderr
    for j in by_rule(jobs(proc))["train"]:
        assert j["resources"]["gpu"] == "2"
