"""Settings records take every default from the schema, their one owner (issue #27, item 4)."""

from __future__ import annotations

import dataclasses

import pytest

from maskcl.config import section_defaults
from maskcl.evaluation.settings import EvalSettings
from maskcl.methods import DEFAULT_METHOD
from maskcl.training.pretrain import PretrainSettings
from maskcl.training.settings import TrainSettings, settings_difference


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls, section, extra", [
    (TrainSettings, "train", {"method", "extras"}),                               # the run's method; free-form
    (EvalSettings, "evaluate", set()),
    (PretrainSettings, "pretrain", {"arch", "height", "width", "workers", "device"}),  # the train section's
])
def test_every_settings_record_is_the_schema_section_and_has_no_default_of_its_own(cls, section, extra):
    schema = set(section_defaults(section)) - {"seed"} if cls is PretrainSettings else set(section_defaults(section))
    fields = _fields(cls)
    assert set(fields) == schema | extra, set(fields) ^ (schema | extra)
    own = [n for n, f in fields.items() if n != "extras" and (f.default is not dataclasses.MISSING
                                                               or f.default_factory is not dataclasses.MISSING)]
    assert own == [], f"{cls.__name__} writes defaults of its own: {own}; the schema owns them"
    record = cls.from_dict({}).__dict__
    for key, value in section_defaults(section).items():
        if key in fields:
            assert record[key] == value and type(record[key]) is type(value), (section, key)


def test_train_defaults_are_the_official_recipe_and_overrides_win():
    s = TrainSettings.defaults()
    assert s.method == DEFAULT_METHOD and (s.arch, s.epochs, s.step_size, s.lr) == ("resnet50", 60, 20, 3.5e-4)
    assert TrainSettings.from_dict({"epochs": 3, "method": "ise"}).epochs == 3
    pre = PretrainSettings.from_dict({"arch": "resnet18"})
    assert (pre.arch, pre.height, pre.epochs) == ("resnet18", 256, section_defaults("pretrain")["epochs"])


def test_a_model_from_before_another_methods_keys_existed_is_still_its_runs():
    """Adding a method adds train keys; a MaskCL model that does not record ISE's is still the MaskCL run's,
    while an ISE model missing them is of an older version."""
    plan = TrainSettings.from_dict({"method": "maskcl"}).to_dict()
    older = {k: v for k, v in plan.items() if not k.startswith("ise_")}
    assert settings_difference(older, plan) is None
    ise_plan = TrainSettings.from_dict({"method": "ise"}).to_dict()
    older_ise = {k: v for k, v in ise_plan.items() if not k.startswith("ise_")}
    diff = settings_difference(older_ise, ise_plan)
    assert diff is not None and diff.kind == "missing" and diff.key.startswith("ise_")
    # a MaskCL key differing on a ClusterContrast model changes nothing it computes; on MaskCL it is foreign
    cc = TrainSettings.from_dict({"method": "clustercontrast"}).to_dict()
    assert settings_difference({**cc, "focal_gamma": 2}, cc) is None
    assert settings_difference({**plan, "focal_gamma": 2}, plan).key == "focal_gamma"
