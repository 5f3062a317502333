"""SCHP network, checkpoint loading, the ABN mapping, the letterbox warps and the official pipeline."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Dict

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from maskcl.errors import CheckpointError
from maskcl.masks import (ABN, SCHP_VARIANTS, AugmentCE2P, SCHPParser, SCHPSource, invert_affine,
                          letterbox_affine, load_schp, manifest_shapes, parse_dataset, warp_affine)
from maskcl.masks.checkpoint import random_state_dict
from maskcl.masks.schp import BGR_MEAN, BGR_STD

try:
    import cv2
except ImportError:  # pragma: no cover - cv2 is in the test extra
    cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="opencv-python-headless (test extra) is not installed")
#: OpenCV 3.x/4.x snap warp sampling points to 1/32 pixel (bit-exact with our default); OpenCV 5 does not.
CV2_QUANTIZES = cv2 is not None and int(cv2.__version__.split(".")[0]) < 5
CLASS_KEYS = ("module.decoder.conv4.weight", "module.decoder.conv4.bias", "module.fushion.3.weight",
              "module.fushion.3.bias")
LEAKY = {"context_encoding.stages.0.2", "context_encoding.stages.1.2", "context_encoding.stages.2.2",
         "context_encoding.stages.3.2", "context_encoding.bottleneck.1", "edge.conv1.1", "edge.conv2.1",
         "edge.conv3.1", "decoder.conv1.1", "decoder.conv2.1", "decoder.conv3.1", "decoder.conv3.3", "fushion.1"}


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def lip_state() -> Dict[str, torch.Tensor]:
    """Official-format LIP state dict (``module.`` keys, manifest shapes, random values)."""
    return random_state_dict(20, seed=0)


def _save(path: Path, sd: Dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": sd, "cycle_n": 3}, path)
    return path


@pytest.fixture(scope="session")
def lip_ckpt(tmp_path_factory, lip_state) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "exp-schp-201908261155-lip.pth", lip_state)


@pytest.fixture(scope="session")
def lip_model(lip_ckpt) -> AugmentCE2P:
    return load_schp(lip_ckpt, "lip")


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- network and manifest
def test_network_keys_and_shapes_equal_the_manifest():
    with torch.device("meta"):
        model = AugmentCE2P(20)
    sd = model.state_dict()
    manifest = manifest_shapes(20, prefix="")
    assert list(sd) == list(manifest)  # same keys, same registration order
    assert {k: tuple(v.shape) for k, v in sd.items()} == manifest
    assert len(sd) == 603
    assert sum(v.numel() for v in sd.values()) == 66_838_456
    assert sum(p.numel() for p in model.parameters()) == 66_723_928
    abns = {n: m for n, m in model.named_modules() if isinstance(m, ABN)}
    assert len(abns) == 119
    assert {n for n, m in abns.items() if m.activation == "leaky_relu"} == LEAKY
    assert not any(k.endswith("num_batches_tracked") for k in sd)


@pytest.mark.parametrize("n", [18, 7])
def test_manifest_class_rows_follow_the_class_count(n):
    lip, other = manifest_shapes(20), manifest_shapes(n)
    changed = {k for k in lip if lip[k] != other[k]}
    assert changed == set(CLASS_KEYS)
    assert other["module.fushion.3.weight"] == (n, 256, 1, 1)


def test_feature_sizes_at_lip_input():
    """Output stride 4 for the logits: 473 → 119 (the reference's numbers), checked on meta tensors."""
    with torch.device("meta"):
        model = AugmentCE2P(20).eval()
        out = model(torch.empty(1, 3, 473, 473), with_aux=True)
    assert tuple(out[0][0].shape) == (1, 20, 119, 119)
    assert tuple(out[0][1].shape) == (1, 20, 119, 119)
    assert tuple(out[1][0].shape) == (1, 2, 119, 119)


# ---------------------------------------------------------------- ABN mapping
@pytest.mark.parametrize("activation", ["none", "leaky_relu"])
def test_abn_equals_inplace_abn_formula(activation):
    gen = torch.Generator().manual_seed(1)
    c = 6
    abn = ABN(c, activation=activation).eval()
    w = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5, -1e-3])  # negative and zero stored weights
    b, mu = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    var = torch.rand(c, generator=gen) + 0.1
    abn.load_state_dict({"weight": w, "bias": b, "running_mean": mu, "running_var": var}, strict=True)
    x = torch.randn(2, c, 5, 4, generator=gen) * 3
    eps = 1e-5
    shape = (1, c, 1, 1)
    expected = (x - mu.view(shape)) / torch.sqrt(var.view(shape) + eps) * (w.abs().view(shape) + eps) + b.view(shape)
    if activation == "leaky_relu":
        expected = torch.where(expected >= 0, expected, 0.01 * expected)
    with torch.no_grad():
        got = abn(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert (expected < 0).any()  # the activation branch was really exercised
    # A plain BatchNorm with the raw (negative) weights is not the same function.
    bn = torch.nn.BatchNorm2d(c, eps=eps).eval()
    bn.load_state_dict({"weight": w, "bias": b, "running_mean": mu, "running_var": var}, strict=False)
    with torch.no_grad():
        assert (bn(x) - got).abs().max() > 0.1


# ---------------------------------------------------------------- checkpoint loading
def test_lip_checkpoint_loads_strictly_with_raw_values(lip_model, lip_state):
    sd = lip_model.state_dict()
    assert len(sd) == 603
    for key in ("conv1.weight", "layer3.22.bn3.weight", "fushion.3.bias", "edge.conv4.weight"):
        torch.testing.assert_close(sd[key], lip_state["module." + key], rtol=0, atol=0)
    assert (sd["bn1.weight"] < 0).any()  # stored as in the file; |w| + eps is applied in forward
    assert not any(p.requires_grad for p in lip_model.parameters())
    assert not lip_model.training


@pytest.mark.parametrize("variant,n", [("atr", 18), ("pascal", 7)])
def test_atr_and_pascal_checkpoints_load(tmp_path, lip_state, variant, n):
    sd = dict(lip_state)
    gen = torch.Generator().manual_seed(n)
    for key in CLASS_KEYS:
        sd[key] = torch.randn((n,) + tuple(lip_state[key].shape[1:]), generator=gen)
    model = load_schp(_save(tmp_path / f"{variant}.pth", sd), variant)
    assert model.num_classes == n == SCHP_VARIANTS[variant].num_classes
    torch.testing.assert_close(model.fushion[3].bias, sd["module.fushion.3.bias"])
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 33, 33)).shape == (1, n, 9, 9)


def test_wrong_class_count_gives_one_line_key_report(lip_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_schp(lip_ckpt, "atr")
    msg = _one_line(err)
    assert "not a SCHP atr (18 classes) checkpoint" in msg
    assert "4 mis-shaped key(s)" in msg and "fushion.3.weight 20x256x1x1 vs 18x256x1x1" in msg
    assert "missing" not in msg and "unexpected" not in msg
    assert "set masks.schp.variant to lip" in msg


def test_other_architecture_lists_missing_unexpected_and_misshaped(tmp_path, lip_state):
    sd = {k: v for k, v in lip_state.items() if ".layer4." not in k and "edge" not in k}
    sd["module.conv1.weight"] = torch.zeros(64, 3, 7, 7)  # a 7x7 stem, as a plain ResNet
    sd["module.fc.weight"] = torch.zeros(1000, 2048)
    sd["module.fc.bias"] = torch.zeros(1000)
    with pytest.raises(CheckpointError) as err:
        load_schp(_save(tmp_path / "resnet.pth", sd), "lip")
    msg = _one_line(err)
    n_missing = sum(1 for k in lip_state if ".layer4." in k or "edge" in k)
    assert f"{n_missing} missing key(s) (layer4.0.conv1.weight" in msg
    assert "2 unexpected key(s) (fc.weight, fc.bias)" in msg
    assert "1 mis-shaped key(s) (conv1.weight 64x3x7x7 vs 64x3x3x3)" in msg
    assert f"… {n_missing - 3} more" in msg  # only the first few are shown
    assert "not an SCHP (AugmentCE2P / ResNet-101) checkpoint" in msg


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_checkpoint_with_pickled_callable_is_refused_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"module.conv1.weight": torch.zeros(1)}, "hook": _Exploit(marker)}
    if how == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError) as err:
        load_schp(path, "lip")
    msg = _one_line(err)
    assert "refused to load" in msg and str(path) in msg
    assert not marker.exists()


def test_missing_checkpoint_names_download_and_config_key(tmp_path):
    path = tmp_path / "nothing.pth"
    for call in (lambda: load_schp(path, "lip"), lambda: SCHPSource(checkpoint=path, variant="lip")):
        with pytest.raises(CheckpointError) as err:
            call()
        msg = _one_line(err)
        assert str(path) in msg and "masks.schp.checkpoint" in msg
        assert "1k4dllHpu0bdx38J7H28rVVLpU-kOHmnH" in msg and "exp-schp-201908261155-lip.pth" in msg
    with pytest.raises(CheckpointError) as err:
        load_schp(path, "pascal")
    assert "1E5YwNKW2VOEayK9mWCS3Kpsxf-3z04ZE" in _one_line(err)


def test_damaged_checkpoint_is_one_line(tmp_path, lip_ckpt):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(lip_ckpt.read_bytes()[:4096])
    with pytest.raises(CheckpointError) as err:
        load_schp(bad, "lip")
    assert "cannot read checkpoint" in _one_line(err)


# ---------------------------------------------------------------- letterbox and warps
SHAPES = {"portrait": (128, 64), "landscape": (61, 190), "square": (100, 100)}


@pytest.mark.parametrize("kind", list(SHAPES))
def test_letterbox_fits_long_side_and_centres_short_side(kind):
    h, w = SHAPES[kind]
    m = letterbox_affine(h, w, (473, 473))
    corners = np.array([[0, 0, 1], [w - 1, h - 1, 1]], dtype=np.float64) @ m.T
    long_axis = 1 if h >= w else 0
    assert np.allclose(corners[:, long_axis], [0, 472])
    mid = corners[:, 1 - long_axis].mean()
    assert mid == pytest.approx(236.0)
    assert np.allclose(invert_affine(m) @ np.append(corners[1], 1.0), [w - 1, h - 1])


def test_letterbox_numbers_of_the_reference():
    """64x128 (w x h) into 473: x spans 118.93 … 353.07 and y 0 … 472."""
    m = letterbox_affine(128, 64, (473, 473))
    xs = np.array([[0, 0, 1], [63, 127, 1]], dtype=np.float64) @ m.T
    assert xs[0, 0] == pytest.approx(118.93, abs=0.01) and xs[1, 0] == pytest.approx(353.07, abs=0.01)
    assert xs[0, 1] == pytest.approx(0.0) and xs[1, 1] == pytest.approx(472.0)


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_letterbox_then_inverse_maps_pixels_back_within_one_pixel(kind, quantize):
    """Warp coordinate images forward into 473x473 and back: every pixel returns to itself."""
    h, w = SHAPES[kind]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    coords = torch.stack([xs, ys, torch.ones_like(xs)])[None]  # channel 2 tracks the valid area
    m = letterbox_affine(h, w, (473, 473))
    fwd = warp_affine(coords, m, (473, 473), quantize=quantize)
    back = warp_affine(fwd, invert_affine(m), (h, w), quantize=quantize)[0]
    inner = back[2] > 0.999  # pixels not blended with the zero border
    assert inner.float().mean() > 0.9
    err = torch.maximum((back[0] - xs).abs(), (back[1] - ys).abs())[inner]
    assert err.max() < 1.0
    assert err.mean() < 0.05


@needs_cv2
@pytest.mark.parametrize("shape", [(128, 64), (64, 128), (100, 100), (37, 211), (2, 1)])
def test_warp_matches_cv2(shape):
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    m = letterbox_affine(h, w, (473, 473))
    quantize = CV2_QUANTIZES
    ref = cv2.warpAffine(img, m, (473, 473), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    got = warp_affine(torch.from_numpy(img).permute(2, 0, 1)[None].float(), m, (473, 473),
                      round_uint8=True, quantize=quantize)[0].permute(1, 2, 0).numpy()
    diff = np.abs(got.astype(int) - ref.astype(int))
    if quantize:
        assert diff.max() == 0
    else:
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    logits = rng.standard_normal((473, 473, 4)).astype(np.float32)
    inv = invert_affine(m)
    ref_back = cv2.warpAffine(logits, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    got_back = warp_affine(torch.from_numpy(logits).permute(2, 0, 1)[None], inv, (h, w),
                           quantize=quantize)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got_back, ref_back.reshape(h, w, 4), atol=1e-5 if quantize else 3e-3)


# ---------------------------------------------------------------- the official pipeline
def _images():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:90, 0:41]
    smooth = np.stack([xx * 6, yy * 2, (xx + yy) * 2], 2).astype(np.uint8)
    return [rng.integers(0, 256, (90, 41, 3), dtype=np.uint8), smooth,
            rng.integers(0, 256, (50, 77, 3), dtype=np.uint8)]


@needs_cv2
def test_preprocess_matches_official_extractor(lip_model):
    parser = SCHPParser(lip_model, input_size=(473, 473), quantize_warp=CV2_QUANTIZES)
    images = _images()
    x, mats = parser.preprocess(images)
    for i, img in enumerate(images):
        warped = cv2.warpAffine(img, mats[i], (473, 473), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        ref = (torch.from_numpy(warped).permute(2, 0, 1).float() / 255.0
               - torch.tensor(BGR_MEAN).view(3, 1, 1)) / torch.tensor(BGR_STD).view(3, 1, 1)
        if CV2_QUANTIZES:
            torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-6)
        else:  # OpenCV 5 computes the same point in float32: rare one-level rounding differences
            diff = (x[i] - ref).abs()
            assert diff.max() < 1.01 / 255 / min(BGR_STD) and (diff > 1e-5).float().mean() < 1e-3
    assert x[0, 0, 0, 0].item() == pytest.approx(-BGR_MEAN[0] / BGR_STD[0], abs=1e-6)  # black padding


@needs_cv2
def test_postprocess_matches_official_extractor(lip_model):
    parser = SCHPParser(lip_model, input_size=(473, 473), quantize_warp=CV2_QUANTIZES)
    sizes = [(90, 41), (90, 41), (50, 77)]
    mats = [letterbox_affine(h, w, (473, 473)) for h, w in sizes]
    logits = torch.randn(3, 20, 473, 473, generator=torch.Generator().manual_seed(3))
    labels = parser.postprocess(logits, sizes, mats)
    for i, (h, w) in enumerate(sizes):
        inv = invert_affine(mats[i])
        chans = [cv2.warpAffine(logits[i, c].numpy(), inv, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0) for c in range(20)]
        ref = np.argmax(np.stack(chans, 2), axis=2).astype(np.uint8)
        assert labels[i].shape == (h, w) and labels[i].dtype == np.uint8
        if CV2_QUANTIZES:
            np.testing.assert_array_equal(labels[i], ref)
        else:  # float32 sampling points in OpenCV 5: near-ties may flip
            assert (labels[i] == ref).mean() > 0.99


def test_network_logits_equal_official_forward_and_batching_changes_nothing(lip_model):
    """parser.logits = Upsample(align_corners=True) of the official output[0][-1]; batch = singles.

    Run at 129x129 to stay fast; the network is fully convolutional, so nothing else changes.
    """
    parser = SCHPParser(lip_model, input_size=(129, 129))
    images = _images()
    x, mats = parser.preprocess(images)
    got = parser.logits(x)
    with torch.no_grad():
        official = lip_model(x, with_aux=True)[0][-1]
    ref = torch.nn.Upsample(size=(129, 129), mode="bilinear", align_corners=True)(official)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    batch = parser.postprocess(got, [im.shape[:2] for im in images], mats)
    single_x, single_m = parser.preprocess(images[-1:])  # the odd-sized image, alone
    torch.testing.assert_close(single_x[0], x[-1], rtol=0, atol=0)
    single = parser.logits(single_x)
    torch.testing.assert_close(single[0], got[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(parser.postprocess(single, [images[-1].shape[:2]], single_m)[0], batch[-1])


def test_schp_source_parses_at_lip_size(tmp_path, lip_ckpt):
    """The full source through parse_dataset, once at the real 473x473 input (batch of 2)."""
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(5)
    rows = []
    for i, (h, w) in enumerate([(96, 40), (40, 70)]):
        rel = f"train/{i:03d}_1_c1_0.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
        rows.append({"path": str(root / rel), "relpath": rel, "split": "train", "pid": i, "camid": 1,
                     "clothes_id": 0})
    manifest = pd.DataFrame(rows)
    src = SCHPSource(checkpoint=lip_ckpt, variant="lip", batch_size=2, device="cpu")
    res = parse_dataset(manifest, tmp_path / "masks" / "schp", src, progress=False)
    assert res.processed == 2
    for row, (h, w) in zip(res.index.itertuples(), [(96, 40), (40, 70)]):
        lab = np.array(Image.open(row.label))
        assert lab.shape == (h, w) and int(lab.max()) < 20
        assert (row.height, row.width) == (h, w)
    params = json.loads((tmp_path / "masks" / "schp" / "params.json").read_text())
    assert params["label_set"] == "lip" and len(params["params"]["checkpoint_sha256"]) == 64
    assert params["params"]["input_size"] == [473, 473]


# ---------------------------------------------------------------- GPU (run on a CUDA machine)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_gpu_matches_cpu_and_amp_runs(lip_model):
    images = _images()
    cpu = SCHPParser(lip_model, input_size=(129, 129), device="cpu")
    x_cpu, _ = cpu.preprocess(images)
    ref_logits = cpu.logits(x_cpu)
    ref = cpu.parse(images)
    gpu = SCHPParser(lip_model, input_size=(129, 129), device="cuda", channels_last=True)
    x_gpu, _ = gpu.preprocess(images)
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=1e-6)  # warps are exact on GPU too
    torch.testing.assert_close(gpu.logits(x_gpu).cpu(), ref_logits, rtol=1e-3, atol=1e-3)
    for a, b in zip(gpu.parse(images), ref):
        assert (a == b).mean() > 0.99
    bf16 = SCHPParser(lip_model, input_size=(129, 129), device="cuda", amp="bf16", channels_last=True)
    out = bf16.parse(images)
    assert [o.shape for o in out] == [im.shape[:2] for im in images]
    lip_model.to("cpu")
