"""Decoded once, augmented in batches (issue #29): the batches equal the per-sample path's, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskcl.masks.index import load_mask
from maskcl.models.images import ImageSet
from maskcl.training.batches import BatchMaker, CachedEval, DecodedImages, View, cache_rule, draw, gray
from maskcl.training.data import MASK_SEED_SALT, PairedImageSet, TrainData
from maskcl.training.methods import METHODS
from maskcl.training.methods.cacl import GRAY_SEED_SALT, GrayPairSet, gray_view_transform
from maskcl.training.settings import TrainSettings
from maskcl.training.transforms import train_transform

SIZE = (48, 24)
N = 10
#: keys as the sampler makes them: (index, seed), indices repeated, seeds large
KEYS = [(i % N, int(s)) for i, s in enumerate(np.random.default_rng(3).integers(0, 2 ** 32 - 1, 24))]


def _folder(root: Path, parts_mode: str = "P"):
    """N images of varied sizes and aspect ratios, each with a silhouette (L, 0/255) and a part map."""
    rng = np.random.default_rng(0)
    images, silhouettes, parts = [], [], []
    palette = rng.integers(0, 256, 20 * 3).astype(np.uint8)
    for i in range(N):
        h, w = int(rng.integers(40, 130)), int(rng.integers(18, 70))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] //= 3  # structure, so that a wrong crop shows
        labels = np.zeros((h, w), np.uint8)
        labels[h // 5: 4 * h // 5, w // 5: 4 * w // 5] = rng.integers(1, 20)
        labels[h // 5: h // 3, w // 3: 2 * w // 3] = rng.integers(1, 20)
        for name, arr, out in (("img", img, images), ("sil", np.where(labels > 0, 255, 0).astype(np.uint8),
                                                         silhouettes)):
            path = root / f"{name}{i}.png"
            Image.fromarray(arr).save(path)
            out.append(str(path))
        part = Image.fromarray(labels, mode="L").convert("P")
        part.putpalette(palette.tolist())
        if parts_mode == "RGB":
            part = part.convert("RGB")
        path = root / f"part{i}.png"
        part.save(path)
        parts.append(str(path))
    return images, silhouettes, parts


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("batches"))


def _per_sample(ds, keys):
    items = [ds[k] for k in keys]
    return tuple(torch.stack([it[j] for it in items]) if j < len(items[0]) - 1 else
                 torch.tensor([it[j] for it in items]) for j in range(len(items[0])))


def _assert_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), f"max |difference| {(x.double() - y.double()).abs().max()}"


@pytest.mark.parametrize("pad, erasing", [(10, 0.5), (4, 0.5), (2, 0.0), (0, 0.5), (0, 0.0)])
def test_rgb_view_equals_the_per_sample_path(folder, pad, erasing):
    images, _, _ = folder
    ds = ImageSet(images, train_transform(SIZE, pad=pad, erasing=erasing))
    cache = DecodedImages.build(images, SIZE)
    got = BatchMaker(cache, [View("image", pad=pad, erasing=erasing)], SIZE, torch.device("cpu"))(KEYS)
    _assert_equal(got, _per_sample(ds, KEYS))


@pytest.mark.parametrize("kind", ["silhouette", "parts"])
@pytest.mark.parametrize("pad, erasing", [(10, 0.5), (0, 0.0)])
def test_mask_view_equals_the_per_sample_path(folder, kind, pad, erasing):
    images, silhouettes, parts = folder
    masks = silhouettes if kind == "silhouette" else parts
    ds = PairedImageSet(images, masks, train_transform(SIZE, pad=pad, erasing=erasing),
                        train_transform(SIZE, pad=pad, erasing=erasing, grayscale=True), kind=kind, fix="FIX")
    cache = DecodedImages.build(images, SIZE, mask_paths=masks,
                                mask_reader=lambda p, **kw: load_mask(p, kind, "FIX", **kw))
    views = [View("image", pad=pad, erasing=erasing),
             View("mask", grayscale=True, salt=MASK_SEED_SALT, pad=pad, erasing=erasing)]
    got = BatchMaker(cache, views, SIZE, torch.device("cpu"))(KEYS)
    _assert_equal(got, _per_sample(ds, KEYS))
    if kind == "parts":  # the part map's grayscale is not any one of its channels: the formula is exercised
        rgb = cache.mask.to(torch.int32)
        assert not torch.equal(gray(cache.mask)[..., 0].to(torch.int32), rgb[..., 0])


def test_rgb_part_maps_too(tmp_path):
    images, _, parts = _folder(tmp_path, parts_mode="RGB")
    ds = PairedImageSet(images, parts, train_transform(SIZE), train_transform(SIZE, grayscale=True), kind="parts",
                        fix="FIX")
    cache = DecodedImages.build(images, SIZE, mask_paths=parts,
                                mask_reader=lambda p, **kw: load_mask(p, "parts", "FIX", **kw))
    views = [View("image"), View("mask", grayscale=True, salt=MASK_SEED_SALT)]
    _assert_equal(BatchMaker(cache, views, SIZE, torch.device("cpu"))(KEYS), _per_sample(ds, KEYS))


@pytest.mark.parametrize("same_draws", [False, True])
def test_cacl_gray_view_equals_the_per_sample_path(folder, same_draws):
    images, _, _ = folder
    ds = GrayPairSet(images, train_transform(SIZE, pad=4), gray_view_transform(SIZE, pad=4), same_draws=same_draws)
    views = [View("image", pad=4), View("image", grayscale=True, salt=0 if same_draws else GRAY_SEED_SALT, pad=4)]
    got = BatchMaker(DecodedImages.build(images, SIZE), views, SIZE, torch.device("cpu"))(KEYS)
    _assert_equal(got, _per_sample(ds, KEYS))


@pytest.mark.parametrize("grayscale", [False, True])
def test_the_cached_extraction_input_is_the_test_transform(folder, grayscale):
    from maskcl.models.images import load_rgb
    from maskcl.training.transforms import test_transform

    images, _, parts = folder
    transform = test_transform(SIZE, grayscale=grayscale)
    cache = DecodedImages.build(images, SIZE, mask_paths=parts,
                                mask_reader=lambda p, **kw: load_mask(p, "parts", "FIX", **kw))
    for i in range(N):
        assert torch.equal(CachedEval(cache.image, grayscale)[i][0], transform(load_rgb(images[i])))
        assert torch.equal(CachedEval(cache.mask, grayscale)[i][0], transform(load_mask(parts[i], "parts", "FIX")))


def test_the_draws_leave_the_global_random_state_alone():
    import random

    random.seed(5)
    torch.manual_seed(5)
    a = (random.random(), torch.rand(1).item())
    random.seed(5)
    torch.manual_seed(5)
    draw(View(), 123, SIZE)
    assert (random.random(), torch.rand(1).item()) == a
    # and differ between seeds (the flip, the crop or the box)
    assert len({draw(View(), s, SIZE) for s in range(20)}) > 15


def test_gray_is_pils_conversion():
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = gray(torch.from_numpy(rgb))[..., 0].numpy()
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(rgb).convert("L")))


def _data(images, masks=None, kind="silhouette") -> TrainData:
    return TrainData(paths=images, pids=np.arange(N) % 4, camids=np.arange(N) % 2, clothes=np.arange(N) % 3,
                     mask_paths=masks, mask_kind=kind)


@pytest.mark.parametrize("method, kind", [("clustercontrast", None), ("spcl", None), ("ise", None),
                                          ("supervised", None), ("cacl", None), ("maskcl", "silhouette"),
                                          ("maskcl", "parts")])
def test_every_methods_views_are_its_dataset(folder, method, kind):
    """Each method's ``views()`` against its own ``dataset()`` with the settings of our configs' pads."""
    images, silhouettes, parts = folder
    masks = None if kind is None else (silhouettes if kind == "silhouette" else parts)
    for pad, erasing in ((10, 0.5), (4, 0.5), (0, 0.0)):
        s = TrainSettings.from_dict(dict(method=method, arch="resnet18", pretrained="none", height=SIZE[0],
                                         width=SIZE[1], pad=pad, erasing=erasing, device="cpu", workers=0))
        data = _data(images, masks, kind or "silhouette")
        m = METHODS.build(method, s, data, torch.device("cpu"))
        views = m.views()
        assert views is not None
        cache = DecodedImages.build(images, SIZE, mask_paths=masks, mask_reader=data.mask_reader() if masks else None)
        _assert_equal(BatchMaker(cache, views, SIZE, torch.device("cpu"))(KEYS), _per_sample(m.dataset(), KEYS))


def test_the_cache_rule_says_where_and_why():
    where, why = cache_rule(1024, torch.device("cpu"))
    assert where == "cpu" and "host memory available" in why
    where, why = cache_rule(2 ** 62, torch.device("cpu"))
    assert where is None and "reading from disk per sample" in why


ENGINE = dict(arch="resnet18", pretrained="none", height=64, width=32, pad=4, epochs=2, iters=2, batch_size=16,
              num_instances=4, k1=10, k2=3, min_samples=2, eps=0.7, workers=0, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import build_tiny_synthcc

    return build_tiny_synthcc(tmp_path_factory.mktemp("engine"))


@pytest.mark.parametrize("method, reads", [("maskcl", 2), ("cacl", 2), ("clustercontrast", 2)])
def test_the_engine_trains_alike_on_both_paths(tiny, method, reads, monkeypatch, caplog):
    """The same weights and log through the engine, batched or per sample: no number moves."""
    import logging

    import pandas as pd

    from conftest import assert_trained_alike
    from maskcl.masks.index import read_mask_index
    from maskcl.training import engine
    from maskcl.training.data import train_data_from_manifest

    index = read_mask_index(tiny / "masks.csv") if method == "maskcl" else None
    data = train_data_from_manifest(pd.read_csv(tiny / "manifest.csv"), index, "silhouette")
    settings = TrainSettings.from_dict(dict(ENGINE, method=method))

    def run(name):
        out = tiny / f"{method}-{name}"
        engine.train(settings, data, seed=0, out_model=str(out / "model.pt"), out_log=str(out / "train_log.csv"),
                     state_dir=str(out / "state"), threads=1, progress=False)
        return out

    with caplog.at_level(logging.INFO, logger="maskcl.training.engine"):
        batched = run("batched")
    assert any("decoded and resized once" in r.getMessage() for r in caplog.records)
    # the memory and per-epoch extractions read the cache, not the files
    extracted = []
    real = CachedEval.__getitem__
    monkeypatch.setattr(CachedEval, "__getitem__", lambda self, i: extracted.append(i) or real(self, i))
    run("batched-again")
    # from the cache: MaskCL's and CACL's two memories once, ClusterContrast's clustering features every epoch
    assert len(extracted) == reads * len(data)
    monkeypatch.setattr(engine, "batch_maker", lambda *a, **k: None)
    assert_trained_alike(batched, run("per-sample"))
    log = pd.read_csv(batched / "train_log.csv")
    assert {"data_s", "step_s", "cluster_s", "epoch_s"} <= set(log.columns)
    assert (log["data_s"] + log["step_s"] + log["cluster_s"] <= log["epoch_s"] + 1e-3).all()
