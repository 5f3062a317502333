"""The SCHP checkpoint stage: fetch from a local HTTP server, a file or (faked) Drive; verify; publish.

Checkpoints are built from the exact LIP/ATR key and shape manifest (random values), saved in the
official ``{"state_dict": ..., "cycle_n": ...}`` wrapper with ``module.`` keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from conftest import serve_folder
from maskcl.errors import CheckpointError
from maskcl.masks.checkpoint import get_variant, load_schp, random_state_dict
from maskcl.masks.fetch import CheckpointSource, fetch_checkpoint


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder of checkpoint files behind an HTTP server on 127.0.0.1."""
    root = tmp_path_factory.mktemp("served")
    torch.save({"state_dict": random_state_dict(20, seed=1), "cycle_n": 3}, root / "lip.pth")
    torch.save({"state_dict": random_state_dict(18, seed=2), "cycle_n": 3}, root / "atr.pth")
    data = (root / "lip.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    (root / "page.html").write_text("<html><body>Sign in to continue</body></html>")

    with serve_folder(root) as url:
        yield root, url


def _source(source: str, variant: str = "lip", sha256=None) -> CheckpointSource:
    return CheckpointSource.from_config({"variant": variant, "source": source, "sha256": sha256})


def _only_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def _assert_nothing_published(out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(out.name + ".download").exists(), "a refused file must not be kept for resume"


def test_fetches_from_a_url_verifies_and_publishes(served, tmp_path):
    root, url = served
    out = tmp_path / "ckpt" / "exp-schp-201908261155-lip.pth"
    got = fetch_checkpoint(_source(f"{url}/lip.pth", sha256=_sha(root / "lip.pth")), out, progress=False)
    assert got == out and _sha(out) == _sha(root / "lip.pth")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left behind
    model = load_schp(out, "lip")
    ref = random_state_dict(20, seed=1, prefix="")
    assert torch.equal(model.state_dict()["fushion.3.weight"], ref["fushion.3.weight"])


def test_local_file_source_is_copied_and_verified(served, tmp_path):
    root, _ = served
    out = tmp_path / "lip.pth"
    fetch_checkpoint(_source(str(root / "lip.pth")), out, progress=False)
    assert _sha(out) == _sha(root / "lip.pth")


def test_pin_mismatch_is_refused_and_nothing_is_left(served, tmp_path):
    root, _ = served
    out = tmp_path / "lip.pth"
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source(str(root / "lip.pth"), sha256="0" * 64), out, progress=False)
    msg = _only_line(err)
    assert "sha256" in msg and "masks.schp.sha256" in msg and "0" * 64 in msg
    _assert_nothing_published(out)


def test_url_pin_mismatch_is_refused(served, tmp_path):
    _, url = served
    out = tmp_path / "lip.pth"
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source(f"{url}/lip.pth", sha256="1" * 64), out, progress=False)
    assert "sha256" in _only_line(err)
    _assert_nothing_published(out)


@pytest.mark.parametrize("name, says", [("page.html", "it is a web page, not a PyTorch checkpoint"),
                                        ("truncated.pth", "damaged or not a PyTorch checkpoint")])
def test_wrong_or_truncated_file_is_refused(served, tmp_path, name, says):
    _, url = served
    out = tmp_path / "lip.pth"
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source(f"{url}/{name}"), out, progress=False)
    msg = _only_line(err)
    assert says in msg and "refused" in msg and url in msg
    _assert_nothing_published(out)


def test_wrong_variant_names_the_right_one(served, tmp_path):
    _, url = served
    out = tmp_path / "lip.pth"
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source(f"{url}/atr.pth", variant="lip"), out, progress=False)
    msg = _only_line(err)
    assert "18 classes" in msg and "masks.schp.variant to atr" in msg
    _assert_nothing_published(out)


def test_unreachable_url_is_one_line(tmp_path):
    out = tmp_path / "lip.pth"
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source("http://127.0.0.1:9/lip.pth"), out, progress=False)
    assert "127.0.0.1:9" in _only_line(err)
    assert not out.exists()


def test_missing_local_file_names_the_key(tmp_path):
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source(str(tmp_path / "nope.pth")), tmp_path / "lip.pth", progress=False)
    assert "masks.schp.source" in _only_line(err)


def test_drive_source_asks_gdown_for_the_official_id_with_resume(served, tmp_path, monkeypatch):
    """The Drive flow itself (confirmation page) is gdown's; here we check what we ask of it."""
    import gdown

    root, _ = served
    calls = []

    def fake_download(*, id, output, quiet, resume):
        calls.append({"id": id, "output": output, "resume": resume})
        Path(output).write_bytes((root / "atr.pth").read_bytes())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    out = tmp_path / "atr.pth"
    fetch_checkpoint(_source("drive", variant="atr"), out, progress=False)
    assert calls == [{"id": get_variant("atr").drive_id, "output": str(out) + ".download", "resume": True}]
    assert _sha(out) == _sha(root / "atr.pth")


def test_drive_failure_says_how_to_get_the_file_by_hand(tmp_path, monkeypatch):
    import gdown

    def failing(**kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(_source("drive"), tmp_path / "lip.pth", progress=False)
    msg = _only_line(err)
    assert get_variant("lip").drive_id in msg and "masks.schp.source" in msg
    assert not (tmp_path / "lip.pth").exists()


@pytest.mark.parametrize("content, says", [(b"<!DOCTYPE html><html>Quota exceeded</html>", "it is a web page"),
                                           (b"GIF89a\x00\x00", "it is not a PyTorch checkpoint")])
def test_a_file_that_is_no_torch_file_is_named_for_what_it_is(tmp_path, content, says):
    """Given by hand as masks.schp.checkpoint too, not only when fetched: never 'pickled code'."""
    from maskcl.masks.checkpoint import read_state_dict

    path = tmp_path / "exp-schp-201908261155-lip.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    msg = _only_line(err)
    assert says in msg and str(path) in msg and "pickled" not in msg
