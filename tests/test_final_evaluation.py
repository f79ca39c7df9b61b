"""The final validation metrics are those of the final weights, measured once: when the run
ends on its last epoch's weights the epoch's validation pass is reused, otherwise (a best
epoch restored) the split is evaluated again."""

from __future__ import annotations

import pytest

from adaptlab.config import RunConfig
from adaptlab.run import run

pytestmark = pytest.mark.slow


# One epoch ends on its only (best) epoch; at lr 0.1 the third epoch only ties the second,
# so the run restores epoch 2 (on this generated data, checked by the assertion below).
@pytest.mark.parametrize(("epochs", "lr", "ends_on_last"), [(1, 0.01, True), (3, 0.1, False)])
def test_final_validation_is_the_final_weights_and_not_measured_twice(
        colour_folder, tmp_path, epochs, lr, ends_on_last):
    holder, passes = {}, []

    def keep(trainer):
        holder["trainer"] = trainer
        measure = trainer._measure

        def counted(split):
            passes.append(split)
            return measure(split)

        trainer._measure = counted

    result = run(RunConfig(domain="wildlife", data=str(colour_folder), strategy="head",
                           out=str(tmp_path / "run"), device="cpu", epochs=epochs, image_size=32,
                           batch_size=4, lr=lr), progress=False, on_trainer=keep)
    metrics = result.metrics
    assert (metrics["best_epoch"] == metrics["epochs_run"]) is ends_on_last
    assert passes.count("val") == epochs + (0 if ends_on_last else 1)
    fresh = holder["trainer"]._measure("val")  # the final weights, measured now
    assert fresh == metrics["final"]["val"]
