"""RunConfig: domain and dataset defaults, overrides, JSON round trip, training subsets."""

from __future__ import annotations

import pytest

from adaptlab.config import RunConfig
from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError
from adaptlab.run import config_for


def test_defaults_come_from_domain_then_dataset_then_caller():
    assert config_for("medical").image_size == 64  # the domain's default
    assert config_for("code").epochs == 5  # the default dataset's own default
    assert config_for("code", dataset="docstring-to-code").lr == 5e-5
    assert config_for("code", dataset="docstring-to-code", lr=0.01).lr == 0.01  # caller wins
    with pytest.raises(AdaptlabError, match="epochs=0 is below the minimum 1"):
        config_for("wildlife", epochs=0)


def test_config_round_trips_through_json():
    config = config_for("wildlife", strategy="freeze", strategy_options={"k": 3}, out="x")
    assert RunConfig.from_json(config.to_json()) == config


def test_train_subset_keeps_every_class_and_leaves_held_out_splits():
    items = [(f"item{i}", i % 3) for i in range(60)]
    data = SplitDataset(class_names=["a", "b", "c"], samples=stratified_split(items))
    subset = data.with_train_subset(6, seed=0)
    assert len(subset.samples["train"]) == 6
    assert set(subset.labels("train")) == {0, 1, 2}
    assert subset.samples["test"] == data.samples["test"]
    assert data.with_train_subset(None, seed=0) is data


def test_group_split_keeps_groups_together():
    groups = [i // 4 for i in range(40)]  # ten volumes of four slices each
    items = [(f"slice{i}", groups[i] % 2) for i in range(40)]  # a volume has one class
    split = stratified_split(items, seed=1, groups=groups)
    where = {}
    for name, members in split.items():
        for item in members:
            where.setdefault(groups[int(item[0][5:])], set()).add(name)
    assert all(len(splits) == 1 for splits in where.values())
    assert all(split[name] for name in ("train", "val", "test"))


def test_group_spanning_two_classes_is_refused():
    with pytest.raises(AdaptlabError, match="group 'scan7' holds items of two classes"):
        stratified_split([("a", 0), ("b", 1)], groups=["scan7", "scan7"])


def test_none_is_a_word_where_the_field_cannot_be_empty():
    """``--set class_weighting=none`` is one of the field's choices, not an empty value; the
    saved config (which a resume reads) holds the word and reads back the same."""
    config = RunConfig(domain="wildlife", out="x").with_overrides(["class_weighting=none"],
                                                                  set())
    assert config.class_weighting == "none"
    assert RunConfig.from_json(config.to_json()).validated().class_weighting == "none"
    optional = RunConfig(domain="wildlife", out="x").validated({"image_size": "none"})
    assert optional.image_size is None  # an optional field: "none" empties it
    with pytest.raises(AdaptlabError, match="schedule"):
        RunConfig(domain="wildlife", out="x").validated({"schedule": "none"})
