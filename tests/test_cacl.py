"""CACL (``maskcl.training.methods.cacl``) against the official code (MingkunLishigure/CACL @ c63a31b).

Every expected value of a step test is derived by hand from the official formulas on a case small enough
to check on paper; the comments carry the arithmetic. File:line references are to the official
repository. The last tests train the method through the engine on a tiny SynthCC: it trains, exports a
model the evaluation reads, and a run resumed after its first epoch is the uninterrupted run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import assert_trained_alike

from maskcl.methods import get_method
from maskcl.models.memory import InstanceMemory
from maskcl.models.images import seeded
from maskcl.training.methods import cacl
from maskcl.training.methods.cacl import (CACLNet, CACLOutput, GrayPairSet, build_cacl_module, cacl_terms,
                                          gray_memory_transform, gray_view_transform, update_memories)
from maskcl.training.settings import TrainSettings
from maskcl.training.transforms import train_transform

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
R2 = 1 / math.sqrt(2)


def _normalised(value: float, c: int) -> float:
    """ToTensor + Normalize of an 8-bit value v in channel c: (v/255 − mean_c) / std_c."""
    return (value / 255 - MEAN[c]) / STD[c]


# ------------------------------------------------------------------------------------ the gray copy
# A 2×2 RGB image chosen to separate the candidate grayscale formulas. PIL's convert("L") (what torchvision's
# Grayscale does to a PIL image, SIC.py 60) is L = (19595·R + 38470·G + 7471·B + 32768) >> 16:
#   (100,150,200): 1,959,500 + 5,770,500 + 1,494,200 + 32,768 = 9,256,968 = 141·65,536 + 16,392 → 141
#                  (float 0.299/0.587/0.114 gives 140.75: truncation 140; the channel mean is 150)
#   (10,207,0):    195,950 + 7,963,290 + 0 + 32,768 = 8,192,008 = 125·65,536 + 8 → 125
#                  (float gives 124.499, which rounds to 124: only the fixed-point formula gives 125)
#   (0,255,0):     9,809,850 + 32,768 = 9,842,618 = 150·65,536 + 12,218 → 150
#   (0,0,255):     1,905,105 + 32,768 = 1,937,873 = 29·65,536 + 37,329 → 29
PIXELS = np.array([[[100, 150, 200], [10, 207, 0]], [[0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
LUMA = [[141, 125], [150, 29]]


def _image() -> Image.Image:
    return Image.fromarray(PIXELS, "RGB")


def test_gray_copy_is_pils_fixed_point_luma_in_three_normalised_channels():
    # no flip, pad or erasing: Resize (2×2 → 2×2 is a copy) → Grayscale(3) → ToTensor → Normalize
    x = gray_view_transform((2, 2), pad=0, erasing=0.0, flip=0.0)(_image())
    assert x.shape == (3, 2, 2)
    for c in range(3):  # one L per pixel, normalised with each channel's own mean and std
        expected = torch.tensor([[_normalised(v, c) for v in row] for row in LUMA])
        assert torch.allclose(x[c], expected, atol=1e-6), c
    assert not torch.allclose(x[0], x[1])  # the normalisation makes the three gray channels differ


def test_gray_copy_is_made_after_the_resize():
    # SIC.py 59-60: Resize then Grayscale. Bicubic resampling rounds per channel, so the order shows.
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (9, 5, 3), dtype=np.uint8), "RGB")
    official = np.asarray(img.resize((2, 4), Image.BICUBIC).convert("L"), dtype=np.float64)
    other_order = np.asarray(img.convert("L").resize((2, 4), Image.BICUBIC), dtype=np.float64)
    assert not np.array_equal(official, other_order)  # the case can tell the two orders apart
    x = gray_view_transform((4, 2), pad=0, erasing=0.0, flip=0.0)(img)
    assert np.allclose(x[0].numpy(), (official / 255 - MEAN[0]) / STD[0], atol=1e-6)


def test_gray_view_erasing_writes_the_imagenet_means_after_normalisation():
    # SIC.py 66: RandomErasing(mean=ImageNet mean) on the normalised tensor: an erased pixel holds
    # (0.485, 0.456, 0.406), not a gray value; every other pixel is the normalised L = 141 of (100,150,200).
    img = Image.new("RGB", (8, 16), (100, 150, 200))
    x = seeded(gray_view_transform((16, 8), pad=0, erasing=1.0, flip=0.0), img, 7)
    fill = torch.tensor(MEAN).view(3, 1, 1)
    gray = torch.tensor([_normalised(141, c) for c in range(3)]).view(3, 1, 1)
    erased = torch.isclose(x, fill, atol=1e-7).all(0)
    kept = torch.isclose(x, gray, atol=1e-6).all(0)
    assert erased.any() and kept.any()
    assert (erased | kept).all()


def _luma_of_view(view: torch.Tensor) -> torch.Tensor:
    """The gray copy an RGB view would have: undo Normalize/ToTensor exactly, convert("L"), normalise again."""
    rgb = (view * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255
    arr = rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    lum = torch.from_numpy(np.asarray(Image.fromarray(arr, "RGB").convert("L"), dtype=np.float32))
    return torch.stack([(lum / 255 - MEAN[c]) / STD[c] for c in range(3)])


@pytest.mark.parametrize("same_draws", [False, True])
def test_gray_view_draws_its_own_flip_and_crop(same_draws):
    # preprocessor.py 30-34: one PIL image, transform1 and transform2 each with its own random draws.
    # Flip and crop commute with a per-pixel luma (padding is black, L = 0), so with shared draws the gray
    # view is exactly the luma of the RGB view; with the official independent draws it is not, for some seed.
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8), "RGB")
    ds = GrayPairSet(["a.png"], train_transform((16, 8), pad=2, erasing=0.0),
                     gray_view_transform((16, 8), pad=2, erasing=0.0), same_draws=same_draws,
                     reader=lambda _: img)
    same = []
    for seed in range(12):
        x_rgb, x_gray, i = ds[(0, seed)]
        assert i == 0 and x_rgb.shape == x_gray.shape == (3, 16, 8)
        same.append(torch.allclose(x_gray, _luma_of_view(x_rgb), atol=1e-5))
        x_rgb2, x_gray2, _ = ds[(0, seed)]  # a view is a function of its seed alone
        assert torch.equal(x_rgb, x_rgb2) and torch.equal(x_gray, x_gray2)
    assert all(same) if same_draws else not all(same)


def test_gray_memory_is_initialised_from_colour_images_by_default():
    # SIC.py 144-151 with evaluators.py 32-36: the cluster loader's transform is the test transform (no
    # grayscale), and memory2 ← model2(colour image). Pixel (0, 0) = (100, 150, 200).
    off = gray_memory_transform((2, 2))(_image())
    assert off[:, 0, 0].tolist() == pytest.approx([_normalised(v, c) for c, v in enumerate((100, 150, 200))],
                                                  abs=1e-6)
    con = gray_memory_transform((2, 2), "consistent")(_image())
    assert con[:, 0, 1].tolist() == pytest.approx([_normalised(125, c) for c in range(3)], abs=1e-6)
    with pytest.raises(ValueError, match="memory_init"):
        gray_memory_transform((2, 2), "grey")


# ------------------------------------------------------------------------------------ the network
class Stub(nn.Module):
    """A backbone with ReIDBackbone's contract: (normalised BN-neck feature, pooled feature) in training."""

    def __init__(self, dim: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.dim = dim
        self.fc = nn.Linear(12, dim)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)

    def forward(self, x):
        pooled = self.fc(x.flatten(1))
        feat = F.normalize(self.neck(pooled), dim=1)
        return (feat, pooled) if self.training else feat


def test_module_is_two_branches_an_rgb_projection_and_two_memories():
    module = build_cacl_module(Stub(seed=0), Stub(seed=1), num_samples=5, temp=0.05, momentum=0.2)
    assert set(module.keys()) == {"net", "mem_rgb", "mem_gray"}  # no fusion memory
    net = module["net"]
    assert {name for name, _ in net.named_children()} == {"rgb", "gray", "proj_rgb"}  # no fusion, no gray head
    assert not net.proj_rgb.bn.bias.requires_grad  # resnet.py 77: full_bn.bias frozen
    for key in ("mem_rgb", "mem_gray"):
        mem = module[key]
        assert mem.features.shape == (5, 3) and mem.temp == 0.05 and mem.momentum == 0.2
        assert not any(True for _ in mem.parameters())  # buffers only
    # trainers.py 209-212: encoder1 sees the RGB batch, encoder2 the gray one; the head reads the RGB pooled feature
    x_rgb, x_gray = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    out = net.train()(x_rgb, x_gray)
    f_r, pooled_r = net.rgb(x_rgb)
    f_g, _ = net.gray(x_gray)
    assert torch.allclose(out.f_rgb, f_r) and torch.allclose(out.f_gray, f_g)
    assert torch.allclose(out.g_rgb, net.proj_rgb(pooled_r))
    with pytest.raises(ValueError, match="dimension"):
        CACLNet(Stub(dim=3), Stub(dim=4))


# ------------------------------------------------------------------------------------ the losses
def _memory(entries, labels, temp):
    mem = InstanceMemory(len(entries), 2, temp=temp, momentum=0.2)
    mem.init_features(torch.tensor(entries, dtype=torch.float32))
    mem.set_labels(torch.tensor(labels))
    return mem


# RGB memory: class 0 = {(1,0), (0,1)}, class 1 = {(−1,0), (0,−1)}: prototypes (.5,.5) and (−.5,−.5).
# Gray memory: class 0 = {(1,0), (0,1)}, class 1 = {(−1,0), (0,1)}: prototypes (.5,.5) and (−.5,.5).
RGB_ENTRIES = [[1, 0], [0, 1], [-1, 0], [0, -1]]
GRAY_ENTRIES = [[1, 0], [0, 1], [-1, 0], [0, 1]]
LABELS = [0, 0, 1, 1]
EPS = 1e-6


def _focal(logits, target):
    """The official focal term by hand (hm.py 92-96, 119-141): p = e^s / (Σ e^s + ε), −(1 − p)^4 log(p + ε)."""
    den = sum(math.exp(s) for s in logits) + EPS
    p = math.exp(logits[target]) / den
    return -((1 - p) ** 4) * math.log(p + EPS)


def _case(temp=0.5):
    mem_rgb = _memory(RGB_ENTRIES, LABELS, temp)
    mem_gray = _memory(GRAY_ENTRIES, LABELS, temp)
    out = CACLOutput(f_rgb=torch.tensor([[1.0, 0.0], [0.0, -1.0]], requires_grad=True),
                     g_rgb=torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True),
                     f_gray=torch.tensor([[0.6, 0.8], [0.0, 1.0]], requires_grad=True))
    return out, mem_rgb, mem_gray, torch.tensor([0, 1])


def test_focal_prototype_terms_by_hand():
    out, mem_rgb, mem_gray, y = _case()
    terms = cacl_terms(out, mem_rgb, mem_gray, y)
    assert list(terms) == list(cacl.CACL_TERMS)
    # proto_rgb (τ = 0.5): sample 0, f = (1,0), target 0: s = (0.5, −0.5)/0.5 = (1, −1);
    # sample 1, f = (0,−1), target 1: s = (−0.5, 0.5)/0.5 = (−1, 1): the same p = e/(e + e⁻¹ + ε) ≈ 0.8808
    rgb = (_focal([1, -1], 0) + _focal([-1, 1], 1)) / 2
    # proto_gray: sample 0, f = (0.6,0.8), target 0: s = (0.3+0.4, −0.3+0.4)/0.5 = (1.4, 0.2);
    # sample 1, f = (0,1), target 1: s = (0.5, 0.5)/0.5 = (1, 1): p ≈ 1/2
    gray = (_focal([1.4, 0.2], 0) + _focal([1.0, 1.0], 1)) / 2
    assert terms["proto_rgb"].item() == pytest.approx(rgb, rel=2e-5)  # float32: 1 − p loses digits
    assert terms["proto_gray"].item() == pytest.approx(gray, rel=1e-6)
    # γ = 4 and not 2 (nor plain cross-entropy): (1 − 0.8808)^4 = 2.0e-4 against (1 − 0.8808)^2 = 1.4e-2
    p = math.e / (math.e + 1 / math.e + EPS)
    assert terms["proto_rgb"].item() == pytest.approx(-((1 - p) ** 4) * math.log(p + EPS), rel=2e-5)
    assert terms["proto_rgb"].item() < 0.001


def test_focal_saturates_with_the_official_epsilon():
    # τ = 0.05, f = (−1, 0), target 0 of the RGB memory: s = (−0.5, 0.5)/0.05 = (−10, 10), p = e⁻²⁰ ≈ 2.1e-9.
    # Officially −(1 − p)^4 log(p + 1e-6) = −log(1.002e-6) = 13.8135; the exact softmax would give 20.0.
    mem = _memory(RGB_ENTRIES, LABELS, 0.05)
    out = CACLOutput(f_rgb=torch.tensor([[-1.0, 0.0]]), g_rgb=torch.tensor([[1.0, 0.0]]),
                     f_gray=torch.tensor([[1.0, 0.0]]))
    y = torch.tensor([0])
    official = cacl_terms(out, mem, mem, y, gray_loss=False, crossview=False)["proto_rgb"].item()
    p = math.exp(-20) / (1 + math.exp(-20) + EPS * math.exp(-10))  # e⁻¹⁰ / (e⁻¹⁰ + e¹⁰ + ε), divided by e¹⁰
    assert official == pytest.approx(-((1 - p) ** 4) * math.log(p + EPS), rel=1e-5)
    assert official == pytest.approx(13.8135, abs=1e-3)
    exact = cacl_terms(out, mem, mem, y, softmax_eps=0.0, gray_loss=False, crossview=False)["proto_rgb"].item()
    assert exact == pytest.approx(20.0, abs=1e-4)


def test_asymmetric_terms_by_hand_and_where_their_gradient_goes():
    out, mem_rgb, mem_gray, y = _case()
    before = (mem_rgb.features.clone(), mem_gray.features.clone())
    cv = cacl_terms(out, mem_rgb, mem_gray, y)["crossview"]
    # hm.py 147-158: −mean cos(g_rgb, sg(f_gray)): cos((1,0),(0.6,0.8)) = 0.6, cos((0,1),(0,1)) = 1 → −0.8
    # hm.py 161-185: −mean cos(g_rgb, sg(gray centroid of y)): cos((1,0),(.5,.5)) = 1/√2 and
    # cos((0,1),(−.5,.5)) = 1/√2 → −1/√2. (The RGB memory's class-1 centroid (−.5,−.5) would give −1/√2 there,
    # and the student f_rgb = (0,−1) instead of g_rgb would give −1 for the instance term.)
    assert cv.item() == pytest.approx(-(0.8 + R2), abs=1e-6)
    cv.backward()
    # d(−cos(g, t))/dg = −(t̂ − (g·t̂) g) for a unit g, averaged over B = 2:
    # g0 = (1,0): −[(0.6,0.8) − 0.6·(1,0)] − [(R2,R2) − R2·(1,0)] = (0, −0.8 − R2) → /2
    # g1 = (0,1): −[(0,1) − (0,1)] − [(−R2,R2) − R2·(0,1)] = (R2, 0) → /2
    expected = torch.tensor([[0.0, -(0.8 + R2) / 2], [R2 / 2, 0.0]])
    assert torch.allclose(out.g_rgb.grad, expected, atol=1e-6)
    assert out.f_gray.grad is None  # the gray embedding is the detached target
    assert out.f_rgb.grad is None  # the RGB embedding is not in the asymmetric terms
    assert torch.equal(mem_rgb.features, before[0]) and torch.equal(mem_gray.features, before[1])


def test_each_term_reaches_only_its_branch():
    # trainers.py 176-188: the RGB focal term trains the RGB trunk, the gray focal term the gray trunk, the
    # asymmetric terms the RGB trunk and its projection head only.
    torch.manual_seed(0)
    module = build_cacl_module(Stub(seed=0), Stub(seed=1), num_samples=8, temp=0.05)
    net = module["net"].train()
    for key in ("mem_rgb", "mem_gray"):
        module[key].init_features(torch.randn(8, 3))
        module[key].set_labels(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    idx = torch.tensor([0, 1, 2, 3, 4, 5])
    x_rgb, x_gray = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2)
    parts = {"rgb": net.rgb, "gray": net.gray, "proj_rgb": net.proj_rgb}
    reached = {}
    for term in cacl.CACL_TERMS:
        net.zero_grad(set_to_none=True)
        out = net(x_rgb, x_gray)
        cacl_terms(out, module["mem_rgb"], module["mem_gray"], module["mem_rgb"].labels[idx])[term].backward()
        reached[term] = {name for name, part in parts.items()
                         if any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())}
    assert reached == {"proto_rgb": {"rgb"}, "proto_gray": {"gray"}, "crossview": {"rgb", "proj_rgb"}}


def test_switches_drop_their_terms():
    out, mem_rgb, mem_gray, y = _case()
    assert list(cacl_terms(out, mem_rgb, mem_gray, y, gray_loss=False, crossview=False)) == ["proto_rgb"]
    assert list(cacl_terms(out, mem_rgb, mem_gray, y, gray_loss=False)) == ["proto_rgb", "crossview"]


# ------------------------------------------------------------------------------------ the memories
def test_memory_update_by_hand():
    # hm.py 28-30, m = 0.2, each memory with its own branch's embedding, sample by sample (index 0 twice):
    # RGB: M0 = (1,0), f = (0,1): 0.2·(1,0) + 0.8·(0,1) = (0.2, 0.8), /√0.68 → (0.242536, 0.970143);
    #      again: 0.2·(0.242536, 0.970143) + 0.8·(0,1) = (0.048507, 0.994029), /0.995211 → (0.048741, 0.998811)
    # gray: M0 = (0,1), f = (1,0): the mirror image → (0.998811, 0.048741); index 2 as the first step.
    mem_rgb = _memory([[1, 0], [0, 1], [1, 0]], [0, 0, 1], 0.05)
    mem_gray = _memory([[0, 1], [1, 0], [0, 1]], [0, 0, 1], 0.05)
    idx = torch.tensor([0, 0, 2])
    f_rgb = torch.tensor([[0.0, 1.0]] * 3)
    f_gray = torch.tensor([[1.0, 0.0]] * 3)
    update_memories(mem_rgb, mem_gray, idx, f_rgb, f_gray)
    a, b = 0.2 / math.sqrt(0.68), 0.8 / math.sqrt(0.68)
    n2 = math.hypot(0.2 * a, 0.2 * b + 0.8)
    twice = (0.2 * a / n2, (0.2 * b + 0.8) / n2)
    assert twice == pytest.approx((0.048741, 0.998811), abs=1e-6)
    assert torch.allclose(mem_rgb.features, torch.tensor([twice, (0.0, 1.0), (a, b)]), atol=1e-6)
    assert torch.allclose(mem_gray.features, torch.tensor([twice[::-1], (1.0, 0.0), (b, a)]), atol=1e-6)


# ------------------------------------------------------------------------------------ pseudo-labels
def test_pseudo_labels_cluster_the_rgb_memory_and_always_refine(monkeypatch):
    seen = {}

    def fake(features, **kw):
        seen.update(kw, features=features)
        return "clusters"

    monkeypatch.setattr(cacl, "cluster_epoch", fake)
    feats = torch.randn(5, 3)
    assert cacl.cacl_pseudo_labels(feats, eps=0.5, ratio=2.0) == "clusters"
    assert seen["refine"] is True and seen["outliers"] == "singleton"  # SIC.py 199-280: no switch, no drop
    assert (seen["eps"], seen["eps_gap"], seen["min_samples"], seen["k1"], seen["k2"], seen["ratio"]) == (
        0.5, 0.02, 4, 30, 6, 2.0)
    assert torch.equal(seen["features"], feats)


def test_pseudo_labels_keep_outliers_as_singletons():
    # three tight blobs of 6 and one far sample: three classes of 6 and a singleton, labels 0..3
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 10
    feats = np.concatenate([centres[k] + 0.01 * rng.standard_normal((6, 8)) for k in range(3)] + [centres[3:4]])
    res = cacl.cacl_pseudo_labels(torch.tensor(feats, dtype=torch.float32), k1=6, k2=2, knn_backend="torch")
    labels = res.labels
    assert sorted(np.bincount(labels).tolist()) == [1, 6, 6, 6]
    assert all(len(set(labels[6 * k:6 * k + 6])) == 1 for k in range(3))


# ------------------------------------------------------------------------------------ the recipe
def test_recipe_is_settings_and_the_repository_defaults():
    recipe = dict(get_method("cacl").recipe)
    assert recipe == {"epochs": 80}  # the only argparse default of SIC.py that is not the schema's (MaskCL's)
    s = TrainSettings.from_dict({"method": "cacl", **recipe})
    # SIC.py 104-108, 358-359, 381-382: ImageNet ResNet-50, last stride 1, average pooling, 256 × 128
    assert (s.arch, s.pretrained, s.pooling, s.last_stride, s.height, s.width) == (
        "resnet50", "imagenet", "avg", 1, 256, 128)
    # SIC.py 356-400: -b 64, --num-instances 4, --epochs 80 (MaskCL: 60), --iters 400, --step-size 20,
    # --momentum 0.2, --temp 0.05, --eps 0.6, --eps-gap 0.02, --k1 30, --k2 6
    assert (s.batch_size, s.num_instances, s.epochs, s.iters, s.step_size, s.momentum, s.temp) == (
        64, 4, 80, 400, 20, 0.2, 0.05)
    assert (s.eps, s.eps_gap, s.k1, s.k2, s.min_samples, s.ratio_cluster, s.focal_gamma, s.softmax_eps) == (
        0.6, 0.02, 30, 6, 4, 1.0, 4.0, 1e-6)
    # SIC.py 156-167, 387-392: Adam 3.5e-4, weight decay 5e-4, StepLR(20, 0.1): drops after epochs 20, 40, 60
    assert (s.lr, s.weight_decay, s.gamma, s.pad, s.erasing) == (3.5e-4, 5e-4, 0.1, 10, 0.5)
    assert (s.memory_init, s.memory_refresh, s.sampler_replacement, s.amp) == ("official", False, "official", "off")


# ------------------------------------------------------------------------------------ through the engine
ENGINE = dict(method="cacl", arch="resnet18", pretrained="none", height=64, width=32, pad=2, epochs=2, iters=2,
              batch_size=16, num_instances=4, k1=10, k2=3, min_samples=2, eps=0.7, workers=0, device="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny SynthCC and one uninterrupted CACL run of 2 epochs × 2 iterations through the engine."""
    import time

    import pandas as pd

    from conftest import build_tiny_synthcc
    from maskcl.training.data import train_data_from_manifest

    work = build_tiny_synthcc(tmp_path_factory.mktemp("cacl"))
    data = train_data_from_manifest(pd.read_csv(work / "manifest.csv"))  # no mask index: CACL reads none
    t0 = time.time()
    result = _engine_train(work, "full", data)
    return work, data, result, time.time() - t0


def _engine_train(work, name, data, **kw):
    from maskcl.training.engine import train

    out = work / name
    out.mkdir(exist_ok=True)
    return train(TrainSettings.from_dict(ENGINE), data, seed=0, out_model=str(out / "model.pt"),
                 out_log=str(out / "train_log.csv"), state_dir=str(out / "state"), threads=1, progress=False, **kw)


def test_cacl_trains_through_the_engine_and_exports_the_rgb_backbone(tiny_run):
    import pandas as pd

    from maskcl.evaluation import evaluate_checkpoint
    from maskcl.training.methods import METHODS
    from maskcl.training.runtime import seed_everything

    work, data, result, _ = tiny_run
    assert result.epochs_run == 2 and result.resumed_from is None
    log = pd.read_csv(work / "full" / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2]
    for term in ("loss", *cacl.CACL_TERMS):  # every term logged, finite; the sum is the loss
        assert np.isfinite(log[term]).all(), term
    np.testing.assert_allclose(log["loss"], log[list(cacl.CACL_TERMS)].sum(axis=1), rtol=1e-5)
    assert (log["crossview"] < 0).all() and (log["crossview"] >= -2).all()  # minus two mean cosines
    assert (log["classes"] >= 1).all() and {"nmi_id", "nmi_clothes"} <= set(log.columns)
    model = torch.load(work / "full" / "model.pt", weights_only=True)
    assert model["method"] == "cacl" and model["epochs"] == 2 and model["train_images"] == len(data)
    # the export is the trained RGB branch: the keys of the initial one (the engine seeds, then builds the
    # method), and training moved its weights
    seed_everything(0)
    init = METHODS.build("cacl", TrainSettings.from_dict(ENGINE), data, torch.device("cpu"))
    ref = init.rgb_backbone().state_dict()
    assert model["state_dict"].keys() == ref.keys()
    assert "mask_state_dict" not in model  # the gray branch is not exported (only the RGB one is evaluated)
    weights = [k for k in ref if ref[k].is_floating_point() and "running" not in k]
    moved = [k for k in weights if not torch.equal(model["state_dict"][k], ref[k])]
    assert len(moved) > len(weights) // 2
    # 4 Adam steps of lr 3.5e-4 move a weight by about 4 · 3.5e-4 at most: the export is the RGB branch, not the
    # gray one (another random initialisation, typically 0.01-0.1 away)
    assert max(float((model["state_dict"][k] - ref[k]).abs().max()) for k in weights) < 4e-3
    gray = init.net.gray.state_dict()
    assert max(float((model["state_dict"][k] - gray[k]).abs().max()) for k in weights) > 1e-2
    res = evaluate_checkpoint("synthcc", work / "manifest.csv", work / "full" / "model.pt",
                              work / "full" / "metrics.json", work / "full" / "ranks.npz",
                              settings={"batch_size": 64, "workers": 0}, device="cpu", threads=1)
    assert res and all(0.0 <= r["mAP"] <= 1.0 for r in res.values())


def test_cacl_stopped_after_epoch_0_resumes_to_the_uninterrupted_run(tiny_run):

    work, data, _, _ = tiny_run
    first = _engine_train(work, "resumed", data, stop_after_epoch=0)
    assert first.epochs_run == 1 and not (work / "resumed" / "model.pt").exists()
    assert (work / "resumed" / "state" / "checkpoint.pt").is_file()
    again = _engine_train(work, "resumed", data)
    assert again.resumed_from == 1 and again.epochs_run == 1
    assert_trained_alike(work / "full", work / "resumed")


def test_an_eps_gap_the_refinement_cannot_run_is_refused_when_the_method_is_built(tiny_run):
    from maskcl.errors import ConfigError
    from maskcl.training.methods import METHODS

    _, data, _, _ = tiny_run
    with pytest.raises(ConfigError, match=r"train.eps_gap \(0.7\) must be smaller than train.eps \(0.7\)"):
        METHODS.build("cacl", TrainSettings.from_dict(dict(ENGINE, eps_gap=0.7)), data, torch.device("cpu"))
