"""A trained model outside the DAG (issue #28): ``maskcl.load_model``, ``embed`` and the ``maskcl`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import maskcl
from conftest import require
from maskcl.cli import main as cli
from maskcl.errors import CheckpointError, InferenceError
from maskcl.evaluation.features import extract_features
from maskcl.inference import load_model, read_image
from maskcl.models.backbone import ReIDBackbone
from maskcl.models.export import save_model

H, W = 64, 32


def _model_file(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = ReIDBackbone("resnet18", pretrained="none", last_stride=1, pooling="avg")
    net.eval()
    with torch.no_grad():  # BN statistics away from (0, 1) so that the features depend on the image
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_model(path, method="clustercontrast", arch="resnet18", dim=net.dim, pooling="avg", last_stride=1,
               input_size=[H, W], settings={"method": "clustercontrast", "epochs": 1}, seed=seed, epochs=1,
               train_images=10, weights={"state_dict": net.state_dict()},
               training={"device": "cpu", "cpu_model": "test CPU", "torch_threads": 1, "train_time_s": 12.5})
    return path


def _person(path: Path, seed: int, size=(H * 2, W * 2)) -> Path:
    """A person-shaped crop: a coloured body on a background, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    img[h // 6: h - h // 8, w // 4: 3 * w // 4] = rng.integers(0, 255, 3)
    img[: h // 6, w // 3: 2 * w // 3] = rng.integers(0, 255, 3)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    model = _model_file(root / "model.pt")
    query = [_person(root / "query" / f"q{i}.png", i) for i in range(3)]
    gallery = [_person(root / "gallery" / f"g{i:02d}.png", 100 + i) for i in range(6)]
    gallery.append(_person(root / "gallery" / "g99_copy_of_q1.png", 1))  # q1's own image: its nearest
    return root, model, query, sorted(gallery)


def test_embed_is_the_evaluate_rules_features_for_paths_pil_and_arrays(work):
    root, model_path, query, gallery = work
    m = maskcl.load_model(model_path, device="cpu")
    assert m.input_size == (H, W) and m.dim == 512 and m.meta["method"] == "clustercontrast"
    f = m.embed(gallery, batch_size=4)
    assert f.shape == (len(gallery), 512) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    # exactly what the evaluate rule computes (same extractor, transform and normalisation)
    ref = extract_features(m.network, gallery, m.transform, batch_size=4, device="cpu", flip=False, normalize=True)
    np.testing.assert_array_equal(f, ref)
    pil = m.embed([Image.open(p) for p in gallery], batch_size=4)
    arr = m.embed([np.asarray(Image.open(p).convert("RGB")) for p in gallery], batch_size=4)
    np.testing.assert_array_equal(pil, f)
    np.testing.assert_array_equal(arr, f)
    # the order is the input order, whatever the batch size
    np.testing.assert_allclose(m.embed(gallery[::-1], batch_size=3), f[::-1], atol=1e-5)
    # distinct images get distinct features (the network is not constant)
    assert np.abs(f[0] - f[1]).max() > 1e-3
    # flip adds the mirrored image's features before normalising
    flipped = m.embed([Image.open(gallery[0]).transpose(Image.FLIP_LEFT_RIGHT)])
    both = m.embed(gallery[:1], flip=True)
    expected = (f[0] + flipped[0]) / np.linalg.norm(f[0] + flipped[0])
    assert not np.allclose(both[0], f[0], atol=1e-4)
    np.testing.assert_allclose(both[0], expected, atol=1e-4)
    assert isinstance(m.network, torch.nn.Module) and not m.network.training


def test_importing_the_package_does_not_import_torch():
    code = "import sys, maskcl; assert 'torch' not in sys.modules; print(callable(maskcl.load_model))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]


@pytest.mark.parametrize("item, words", [
    (np.zeros((8, 4, 3), np.float32), "must be uint8"),
    (np.zeros((8, 4, 4), np.uint8), "(H, W, 3)"),
    ("missing.png", "image not found"),
    (3, "a int is not an image"),
])
def test_a_bad_image_is_one_line_naming_it(work, item, words):
    with pytest.raises(InferenceError) as e:
        read_image(item, where="images[2]")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_inputs_of_embed(work, tmp_path):
    root, model_path, _, gallery = work
    m = load_model(model_path, device="cpu")
    for bad, words in (([], "no images given"), (str(gallery[0]), "wrap a single image in a list")):
        with pytest.raises(InferenceError, match=words):
            m.embed(bad)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InferenceError, match=r"broken\.jpg: cannot decode the image"):
        m.embed([gallery[0], broken])
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 4), 40000, np.uint16)).save(deep)
    with pytest.raises(InferenceError, match="deep.png"):
        m.embed([deep])


def test_load_model_refuses_what_is_no_model(work, tmp_path):
    _, model_path, _, _ = work
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"no torch file")
    other = tmp_path / "other.pt"
    obj = torch.load(model_path, weights_only=True)
    obj["format"] = "maskcl-model/0"
    torch.save(obj, other)
    for path, words in ((tmp_path / "none.pt", "model file not found"), (junk, "not a readable model file"),
                        (other, "not a maskcl-model/1 file")):
        with pytest.raises(CheckpointError, match=words):
            load_model(path, device="cpu")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("ERROR:")]
    assert len(errors) == 1, err
    return errors[0]


def test_extract_writes_features_and_paths_in_input_order(work, tmp_path, capsys):
    root, model_path, query, gallery = work
    out = tmp_path / "g.npz"
    assert cli(["extract", str(model_path), str(root / "gallery"), "--out", str(out), "--device", "cpu",
                "--quiet"]) == 0
    got = np.load(out)
    assert [Path(p).name for p in got["paths"]] == [p.name for p in gallery]  # a folder: sorted
    np.testing.assert_array_equal(got["features"], load_model(model_path, "cpu").embed(gallery))
    # a list file: paths relative to its folder, comments and blank lines skipped, order kept
    lst = root / "query" / "list.txt"
    lst.write_text("# my queries\nq2.png\n\nq0.png\n")
    out2 = tmp_path / "q.npz"
    assert cli(["extract", str(model_path), "--list", str(lst), "--out", str(out2), "--quiet"]) == 0
    got2 = np.load(out2)
    assert [Path(p).name for p in got2["paths"]] == ["q2.png", "q0.png"]
    np.testing.assert_allclose(got2["features"], load_model(model_path, "cpu").embed([query[2], query[0]]),
                               atol=1e-6)


def test_extract_bad_input_is_one_line_and_leaves_no_file(work, tmp_path, capsys):
    root, model_path, _, gallery = work
    empty_list = tmp_path / "empty.txt"
    empty_list.write_text("# nothing\n")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    broken = tmp_path / "imgs" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"PNG? no")
    notmodel = tmp_path / "notes.txt"
    notmodel.write_text("hello")
    out = tmp_path / "f.npz"
    cases = [
        (["--list", str(empty_list)], "names no image"),
        ([str(empty_dir)], "no image in the folder"),
        ([str(gallery[0]), str(broken)], "broken.png: cannot decode"),
        ([], "give the images"),
    ]
    for extra, words in cases:
        assert cli(["extract", str(model_path), *extra, "--out", str(out), "--quiet"]) == 1
        assert words in _error_line(capsys)
    assert cli(["extract", str(notmodel), str(gallery[0]), "--out", str(out), "--quiet"]) == 1
    assert "notes.txt: not a readable model file" in _error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".f.npz*"))


def test_rank_writes_the_ranking_and_its_grid(work, tmp_path, capsys):
    root, model_path, query, gallery = work
    out = tmp_path / "ranked"
    assert cli(["rank", str(model_path), "--query", str(root / "query"), "--gallery", str(root / "gallery"),
                "--top", "4", "--out", str(out), "--quiet"]) == 0
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking.columns) == ["query", "rank", "gallery", "distance"]
    assert len(ranking) == 3 * 4 and ranking.groupby("query")["rank"].apply(list).tolist() == [[1, 2, 3, 4]] * 3
    assert all(np.all(np.diff(g["distance"].to_numpy()) >= 0) for _, g in ranking.groupby("query"))
    first = ranking[ranking["rank"] == 1].set_index("query")["gallery"]
    assert Path(first[str(query[1])]).name == "g99_copy_of_q1.png"  # its own image
    assert ranking.loc[ranking["gallery"].str.endswith("g99_copy_of_q1.png") & (ranking["rank"] == 1),
                       "distance"].iloc[0] < 1e-5
    # the distances are the squared Euclidean ones of embed's features
    m = load_model(model_path, "cpu")
    qf, gf = m.embed(query[:1]), m.embed([Path(ranking["gallery"].iloc[0])])
    assert ranking["distance"].iloc[0] == pytest.approx(float(((qf - gf) ** 2).sum()), abs=1e-5)
    assert (out / "ranking_grid.png").stat().st_size > 1000
    grid = pd.read_csv(out / "ranking_grid.csv")
    assert len(grid) == 3 * 5 and grid["caption"].iloc[0] == f"query {query[0].name}"


def test_rank_that_fails_drawing_its_grid_leaves_no_ranking(work, tmp_path, monkeypatch):
    """ranking.csv is the last file rank writes: a failure while drawing must not leave it looking complete."""
    import maskcl.reporting.retrieval as retrieval

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(retrieval, "plot_retrieval", broken)
    root, model_path, _, _ = work
    out = tmp_path / "ranked"
    assert cli(["rank", str(model_path), "--query", str(root / "query"), "--gallery", str(root / "gallery"),
                "--out", str(out), "--quiet"]) == 1
    assert not (out / "ranking.csv").exists()


def test_rank_refuses_an_image_not_shaped_like_a_person_crop(work, tmp_path, capsys):
    root, model_path, _, _ = work
    q = tmp_path / "frames"
    _person(q / "frame.png", 5, size=(40, 120))  # a landscape frame, not a crop
    out = tmp_path / "ranked"
    args = ["rank", str(model_path), "--query", str(q), "--gallery", str(root / "gallery"), "--out", str(out),
            "--quiet"]
    assert cli(args) == 1
    line = _error_line(capsys)
    assert "frame.png: the query image is 40x120 px" in line and "--any-size" in line
    assert not out.exists()
    assert cli([*args, "--any-size"]) == 0 and (out / "ranking.csv").is_file()


def test_export_onnx_matches_torch(work, tmp_path, capsys):
    try:
        import onnx
        import onnxruntime
    except ImportError:
        onnx = onnxruntime = None
    require(onnx is not None, "the onnx extra (pip install -e '.[onnx]')")
    root, model_path, _, gallery = work
    out = tmp_path / "model.onnx"
    assert cli(["export-onnx", str(model_path), str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["input_height"], meta["input_width"]) == (str(H), str(W)) and meta["arch"] == "resnet18"
    m = load_model(model_path, "cpu")
    x = torch.stack([m.transform(read_image(p)) for p in gallery]).numpy()  # a batch size unlike the export's
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x})[0]
    np.testing.assert_allclose(got, m.embed(gallery), atol=1e-4)


def test_export_onnx_without_the_extra_says_how_to_install_it(work, tmp_path, capsys, monkeypatch):
    _, model_path, _, _ = work
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "model.onnx"
    assert cli(["export-onnx", str(model_path), str(out)]) == 1
    assert 'pip install -e ".[onnx]"' in _error_line(capsys)
    assert not out.exists()
