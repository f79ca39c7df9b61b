"""Tasks: one registry, one vocabulary of task names shared by datasets and domains."""

from __future__ import annotations

import re

import pytest

from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError, PluginError
from adaptlab.plugins.registry import discover_domains
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec
from adaptlab.tasks.registry import get_task_class, make_task, register_task, task_names


def test_built_in_task_names_are_the_dataset_names():
    assert {"classification", "segmentation", "field-regression", "retrieval",
            "forecasting"} <= set(task_names())
    for name in task_names():
        assert get_task_class(name).name == name


def test_a_name_registered_twice_fails_loudly():
    existing = get_task_class("classification")
    again = type("Impostor", (existing,), {"name": "classification"})
    with pytest.raises(AdaptlabError, match="already registered"):
        register_task(again)
    assert get_task_class("classification") is existing
    assert register_task(existing) is existing  # the same class again is not a clash


def test_make_task_builds_the_dataset_task_with_its_weights():
    data = SplitDataset(["a", "b"], {"train": [("x", 0), ("y", 0), ("z", 1)], "val": [],
                                     "test": []})
    task = make_task(data, "balanced")
    assert task.name == "classification" and task.weights.tolist() == pytest.approx([0.75, 1.5])
    assert make_task(data, "none").weights is None
    with pytest.raises(AdaptlabError, match="unknown task .translation.; choose from"):
        make_task(SplitDataset([], {"train": []}, task="translation"))


def _domain(task: str) -> DomainSpec:
    return DomainSpec(name="d", title="D", description="d", tasks=(task,),
                      datasets=(DatasetSpec("a", task, "d", "x:y"),),
                      backbones=(BackboneSpec("b", "d", "x:y", "local-file", 1.0, (3, 8, 8)),),
                      default_dataset="a", default_backbone="b")


def test_a_domain_naming_an_unregistered_task_is_refused_with_the_known_names():
    _domain("classification").validate()
    with pytest.raises(PluginError) as caught:
        _domain("image-classification").validate()
    assert "'image-classification'" in str(caught.value)
    assert "'classification'" in str(caught.value) and "'forecasting'" in str(caught.value)


def test_every_installed_domain_uses_registered_task_names():
    found = discover_domains()
    assert not found.errors
    names = set(task_names())
    for spec in found.domains.values():
        assert set(spec.tasks) <= names
        assert all(dataset.modality for dataset in spec.datasets)


@pytest.mark.parametrize(("rates", "fragment"), [
    ({"lorra": 1e-3}, "'lorra', not a registered strategy"),
    ({"lora": 0}, "strategy_lr['lora'] = 0 is not a positive"),
    ({"lora": "1e-3"}, "strategy_lr['lora'] = '1e-3' is not a positive"),
    ([("lora", 1e-3)], "must map strategy names"),
    ({"vgg:lora": 1e-3}, "key 'vgg:lora' names backbone 'vgg', not declared"),
])
def test_a_rate_chosen_per_strategy_must_name_a_strategy_and_a_positive_rate(rates, fragment):
    import dataclasses

    good = _domain("classification")
    dataclasses.replace(good, defaults={"strategy_lr": {"lora": 1e-3, "b:head": 2e-3}}).validate()
    with pytest.raises(PluginError, match=re.escape(fragment)):
        dataclasses.replace(good, defaults={"strategy_lr": rates}).validate()
    dataset = dataclasses.replace(good.datasets[0], defaults={"strategy_lr": rates})
    with pytest.raises(PluginError, match="dataset 'a' defaults"):
        dataclasses.replace(good, datasets=(dataset,)).validate()
