"""The conda environments (envs/*.yaml) stay in step with pyproject.toml, and install this checkout.

Conda cannot be reached from CI, so two things are checked without it:

- the package lists: every runtime dependency of maskcl is in every env (conda or pip section,
  under its conda name), with bounds no looser than pyproject.toml's, so that the editable install
  of the package makes pip install none of them a second time (which would e.g. put PyPI's CUDA
  torch or a second faiss over the conda one);
- the editable install itself: Snakemake is run with ``--use-conda --conda-create-envs-only`` and a
  stand-in ``conda`` on PATH that does what conda's pip installer does (conda/env/installers/pip.py:
  write the pip list to a requirements file beside the env file it was given, run pip from that
  folder). The stand-in asks the real pip (``--dry-run --report``) what it would install.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
#: Rules whose jobs use a GPU get the CUDA-capable `pytorch`; the others the CPU-only build.
GPU_ENVS = {"parse", "train", "evaluate"}
CPU_ENVS = {"download", "tables"}
#: PyPI name -> names the same distribution has on conda-forge / bioconda.
CONDA_NAMES: Dict[str, Tuple[str, ...]] = {
    "torch": ("pytorch", "pytorch-cpu", "pytorch-gpu"),
    "pillow": ("pillow",),
    "matplotlib": ("matplotlib-base", "matplotlib"),
    "snakemake": ("snakemake-minimal", "snakemake"),
}
#: Installed from the env's pip section on purpose (see the comment in every env file).
PIP_ONLY = {"faiss-cpu"}
EDITABLE = '-e "${MASKCL_ROOT}"'


def runtime_requirements() -> Dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in meta["dependencies"]}


def conda_spec(spec: str) -> Tuple[str, SpecifierSet]:
    """``name>=1,<2`` / ``name=3.11`` (conda's fuzzy ``3.11.*``) / ``name`` -> (name, specifiers)."""
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip())
    assert m, f"unparsable conda spec {spec!r}"
    name, rest = m.group(1), m.group(2).replace(" ", "")
    parts = []
    for c in filter(None, rest.split(",")):
        if re.fullmatch(r"=[0-9][0-9.]*", c):
            parts.append(f"=={c[1:]}.*")
        else:
            assert re.fullmatch(r"(>=|<=|>|<|==|!=)[0-9][0-9.]*\*?", c), f"unsupported constraint {c!r} in {spec!r}"
            parts.append(c)
    return canonicalize_name(name), SpecifierSet(",".join(parts))


def bounds(spec: SpecifierSet) -> Tuple[Optional[Version], Optional[Version]]:
    lower = [Version(s.version) for s in spec if s.operator in (">=", ">")]
    upper = [Version(s.version) for s in spec if s.operator in ("<", "<=")]
    return (max(lower) if lower else None, min(upper) if upper else None)


def load_env(path: Path) -> Tuple[dict, Dict[str, SpecifierSet], List[str]]:
    env = yaml.safe_load(path.read_text())
    conda: Dict[str, SpecifierSet] = {}
    pip: List[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip = list(dep["pip"])
            continue
        name, spec = conda_spec(dep)
        assert name not in conda, f"{path.name}: {name} listed twice"
        conda[name] = spec
    return env, conda, pip


@pytest.mark.parametrize("path", ENVS, ids=[p.stem for p in ENVS])
def test_env_lists_every_runtime_dependency_with_compatible_bounds(path):
    env, conda, pip = load_env(path)
    assert env["channels"] == ["conda-forge", "bioconda", "nodefaults"], \
        "conda-forge first, bioconda for snakemake-minimal only; never `defaults` or the frozen `pytorch` channel"
    assert str(conda.pop("python")) == "==3.11.*" and "pip" in conda
    conda.pop("pip")
    pip_reqs = {canonicalize_name(Requirement(p).name): Requirement(p) for p in pip if not p.startswith("-")}
    assert pip[-1] == EDITABLE, f"{path.name}: the pip section must end with {EDITABLE}"
    used = set()
    for name, req in runtime_requirements().items():
        if name in PIP_ONLY:
            assert name in pip_reqs, f"{path.name}: {name} belongs in the pip section"
            found, spec = name, pip_reqs[name].specifier
        else:
            hits = [n for n in CONDA_NAMES.get(name, (name,)) if n in conda]
            assert len(hits) == 1, f"{path.name}: runtime dependency {req} must appear once as one of " \
                                   f"{CONDA_NAMES.get(name, (name,))}, found {hits}"
            found, spec = hits[0], conda[hits[0]]
        used.add(found)
        want_lo, want_hi = bounds(req.specifier)
        lo, hi = bounds(spec)
        if want_lo is not None:
            assert lo is not None and lo >= want_lo, f"{path.name}: {found}{spec} allows versions below {req}"
        if want_hi is not None:
            assert hi is not None and hi <= want_hi, f"{path.name}: {found}{spec} allows versions above {req}"
    assert set(conda) - used == set(), f"{path.name}: not a runtime dependency of maskcl: {set(conda) - used}"
    assert set(pip_reqs) - used == set(), f"{path.name}: not a runtime dependency: {set(pip_reqs) - used}"
    torch_pkg = next(n for n in CONDA_NAMES["torch"] if n in conda)
    assert torch_pkg == ("pytorch" if path.stem in GPU_ENVS else "pytorch-cpu"), path.name


def test_every_rule_file_has_its_env():
    """One env per rule file; GPU rules get the CUDA-capable pytorch (checked above by name)."""
    assert {p.stem for p in ENVS} == GPU_ENVS | CPU_ENVS
    for rules in (ROOT / "rules").glob("*.smk"):
        envs = set(re.findall(r'conda:\s*\n\s*"\.\./envs/([a-z_]+)\.yaml"', rules.read_text()))
        if rules.stem != "common":
            assert envs == {rules.stem}, f"{rules.name} uses envs {envs}, expected envs/{rules.stem}.yaml"


def test_lint_is_clean(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path)], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ the editable install
FAKE_CONDA = """\
#!{python}
# Stand-in for `conda`, for Snakemake's calls only; env creation mimics conda's pip installer.
import hashlib, json, os, subprocess, sys, tempfile
from pathlib import Path
import yaml
args = sys.argv[1:]
record = Path(os.environ["FAKE_CONDA_RECORD"])
if args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": os.environ["FAKE_CONDA_BASE"], "platform": "linux-64",
                      "conda_version": "25.1.1"}}))
elif args == ["--version"]:
    print("conda 25.1.1")
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}, "success": True}}))
elif args[:2] == ["env", "create"]:
    env_file = os.path.abspath(args[args.index("--file") + 1])
    prefix = args[args.index("--prefix") + 1]
    pip = next(d["pip"] for d in yaml.safe_load(open(env_file))["dependencies"] if isinstance(d, dict))
    workdir = os.path.dirname(env_file)  # as conda: the env file's folder, if writable
    if not os.access(workdir, os.W_OK):
        workdir = None
    with tempfile.NamedTemporaryFile("w", prefix="condaenv.", suffix=".requirements.txt", dir=workdir,
                                     delete=False) as f:
        f.write("\\n".join(pip))
    # conda runs `pip install -U -r <file>` there; ask the real pip what that would install (once per
    # distinct list, folder and MASKCL_ROOT: the envs share their pip section).
    key = hashlib.sha256(json.dumps([pip, workdir, os.environ.get("MASKCL_ROOT")]).encode()).hexdigest()
    cache = record.with_name("pip-" + key + ".json")
    if not cache.exists():
        report = f.name + ".report.json"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                               "--no-build-isolation", "-q", "-r", f.name, "--report", report],
                              cwd=workdir, capture_output=True, text=True)
        installs = json.load(open(report))["install"] if proc.returncode == 0 else []
        cache.write_text(json.dumps({{"rc": proc.returncode, "stderr": proc.stderr[-2000:],
                                     "installs": [[i["metadata"]["name"], i["download_info"]] for i in installs]}}))
        if proc.returncode == 0:
            os.remove(report)
    os.remove(f.name)
    result = json.loads(cache.read_text())
    with open(record, "a") as out:
        out.write(json.dumps(dict(result, env_file=env_file, pip_cwd=workdir,
                                  MASKCL_ROOT=os.environ.get("MASKCL_ROOT"))) + "\\n")
    if result["rc"]:
        sys.stderr.write(result["stderr"])
        sys.exit(1)
    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
else:
    sys.stderr.write("fake conda: unexpected call %r\\n" % (args,))
    sys.exit(2)
"""


def create_envs_with_fake_conda(root: Path, tmp_path: Path) -> Tuple[subprocess.CompletedProcess, List[dict]]:
    """`snakemake --use-conda --conda-create-envs-only` on the default DAG of ``root``, in a fresh working
    directory, with the stand-in conda; returns the run and one record per env created."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable))
    conda.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    record = tmp_path / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "MASKCL_ROOT"}  # the workflow must set it
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", FAKE_CONDA_RECORD=str(record),
               FAKE_CONDA_BASE=str(tmp_path / "condabase"))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"),
                           "--directory", str(work), "--configfile", str(root / "config.yaml"), "--cores", "1",
                           "--use-conda", "--conda-create-envs-only"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    records = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return proc, records


def test_conda_envs_install_this_checkout_editable(tmp_path):
    proc, records = create_envs_with_fake_conda(ROOT, tmp_path)
    why = textwrap.shorten(proc.stderr[-1500:], 1500)
    assert records, f"no conda env was created: {why}"
    for rec in records:
        assert rec["MASKCL_ROOT"] == str(ROOT), \
            "rules/common.smk must export the workflow folder for the envs' pip section: " \
            "os.environ['MASKCL_ROOT'] = workflow.basedir"
        assert rec["rc"] == 0, rec["stderr"]
        # Snakemake hands conda a copy of the env file under .snakemake/conda/, so a relative path
        # in the pip section would be resolved from there (`-e ..` -> .snakemake/), not from envs/.
        assert Path(rec["env_file"]).parent == tmp_path / "work" / ".snakemake" / "conda"
        assert rec["pip_cwd"] == rec["env_file"].rsplit("/", 1)[0]
        assert ["maskcl-pipeline", {"url": ROOT.as_uri(), "dir_info": {"editable": True}}] in rec["installs"]
    assert proc.returncode == 0, why
    # One env per rule file on the default DAG (pretrain shares train's and is not in it).
    assert len(records) == len(ENVS)
