"""adaptlab against fastai (`vision_learner` + `fine_tune`) on the wildlife demo (`animals`).

`adaptlab run wildlife --strategy full` against `vision_learner` over the same EfficientNet-Lite0
module and offline weights, fed the same splits (read through adaptlab's dataset code), image
size, normalisation, batch size, total epochs and loss, on the CPU at the same thread count.
Each run is a fresh process timed whole, the tools alternating; held-out test accuracy and
macro-F1 come from the same scikit-learn code for both.

fastai is not a dependency of adaptlab; install the optional extra first:

    pip install -e .[bench]
    nice -n 15 python bench/fastai_wildlife.py [--rounds 2] [--epochs 10] [--image-size 160] \
        [--batch-size 16] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole_process import CROWDED, timed  # noqa: E402

from report import held_out_metric, machine, seconds, write_section  # noqa: E402


# -- the fastai side, in its own process ------------------------------------------------------
def fastai_worker(spec_path: Path, out: Path) -> None:
    marks: list[tuple[str, float]] = []
    import fastai.vision.all as fv
    import pandas as pd
    import torch

    from adaptlab.backbones.offline import efficientnet_lite0
    from adaptlab.tasks.classification import class_weights, classification_metrics
    from adaptlab_wildlife.datasets import load_photos

    spec = json.loads(spec_path.read_text())
    size, seed = spec["image_size"], spec["seed"]
    fv.set_seed(seed, reproducible=True)
    backbone, data = efficientnet_lite0(), load_photos({"seed": seed})
    pre, names = backbone.preprocessing, data.class_names

    def frame(split: str, valid: bool) -> pd.DataFrame:
        return pd.DataFrame({"path": [str(p) for p, _ in data.samples[split]],
                             "label": [names[y] for _, y in data.samples[split]],
                             "is_valid": valid})

    class CentreCropForEval(fv.RandomResizedCrop):
        """fastai's random-resized crop while training; at validation and test, adaptlab's
        central crop (``crop_pct`` of the shorter side, aspect kept) rather than fastai's
        squash of the whole photo, so both tools score the very same pixels."""

        def __init__(self, size, crop_pct, **kwargs):
            super().__init__(size, **kwargs)
            self.crop_pct = crop_pct

        def before_call(self, b, split_idx):
            super().before_call(b, split_idx)
            if split_idx:
                w, h = self.orig_sz
                side = round(min(w, h) * self.crop_pct)
                self.cp_size, self.tl = (side, side), ((w - side) // 2, (h - side) // 2)
                self.final_size = self.size

    block = fv.DataBlock(
        blocks=(fv.ImageBlock, fv.CategoryBlock(vocab=names)),  # adaptlab's label indices
        get_x=fv.ColReader("path"), get_y=fv.ColReader("label"),
        splitter=fv.ColSplitter("is_valid"),
        item_tfms=[CentreCropForEval(size, pre.crop_pct, min_scale=0.5), fv.FlipItem(0.5)],
        batch_tfms=fv.Normalize.from_stats(list(pre.mean), list(pre.std)))
    # adaptlab loads in the main process and keeps the last short batch: so does fastai here
    dls = block.dataloaders(pd.concat([frame("train", False), frame("val", True)]),
                            bs=spec["batch_size"], num_workers=0, drop_last=False, device="cpu")
    weights = class_weights(data.labels("train"), len(names))

    learn = fv.vision_learner(dls, lambda pretrained: backbone.module, pretrained=True,
                              loss_func=fv.CrossEntropyLossFlat(weight=weights),
                              metrics=fv.accuracy)
    marks.append(("fit", time.time()))
    with learn.no_bar():
        # fine_tune(n) trains one frozen epoch and then n unfrozen: n + 1 passes in all
        learn.fine_tune(spec["epochs"] - 1, freeze_epochs=1)
        marks.append(("trained", time.time()))
        probs, targets = learn.get_preds(dl=learn.dls.test_dl(frame("test", True),
                                                              with_labels=True))
    y_true = torch.tensor(data.labels("test"))
    if not torch.equal(targets, y_true):
        raise SystemExit("fastai's test labels are not adaptlab's")
    test = classification_metrics(y_true.numpy(), probs.argmax(1).numpy(), names,
                                  scores=probs.numpy())
    learn.export(out / "export.pkl")  # what a fastai user ships: the whole Learner pickled
    head = [type(m).__name__ for m in learn.model[1]]
    tune = inspect.signature(type(learn).fine_tune).parameters  # the peak rates it used
    base, mult = tune["base_lr"].default, tune["lr_mult"].default
    (out / "result.json").write_text(json.dumps({
        "marks": marks, "test": test, "threads": torch.get_num_threads(), "head": head,
        "groups": len(learn.opt.param_groups), "frozen_lr": base,
        "lrs": [base / 2 / mult, base / 2]}))


def adaptlab_phases(run_dir: Path, launch: float, end: float) -> dict[str, float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    first, last = {}, {}
    for e in events:
        first.setdefault(e["event"], e["time"])
        last[e["event"]] = e["time"]
    opened = (run_dir / "config.json").stat().st_mtime
    return {"startup": opened - launch + first["epoch_start"] - first["baseline"],
            "baselines": first["baseline"] - opened,
            "epochs": last["epoch_end"] - first["epoch_start"],
            "after": end - last["epoch_end"]}


def fastai_phases(result: dict, launch: float, end: float) -> dict[str, float | None]:
    marks = dict(result["marks"])
    return {"startup": marks["fit"] - launch, "baselines": None,
            "epochs": marks["trained"] - marks["fit"], "after": end - marks["trained"]}


PHASES = {
    "startup": "start-up: imports, backbone and weights, data, model set-up",
    "baselines": "unadapted baselines (nearest-class-mean on frozen features of train, val and "
                 "test; fastai has none)",
    "epochs": "training epochs, each with its validation pass (adaptlab: and a checkpoint)",
    "after": "after the last epoch to exit (adaptlab: best epoch restored, train, val and test "
             "evaluated, weights saved, reloaded and compared, metrics, costs and model card; "
             "fastai: test predictions, `learn.export`)",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10, help="total passes over the train split")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of both tools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-only", action="store_true")
    parser.add_argument("--note", default=None,
                        help="a paragraph on what else was measured, printed after the section")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return fastai_worker(*args.worker)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: fastai's fine_tune spends one on the head alone")

    import torch

    torch.set_num_threads(args.threads)  # so machine() reports the threads the runs get
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    spec = {"epochs": args.epochs, "image_size": args.image_size,
            "batch_size": args.batch_size, "seed": args.seed}
    rounds = {"adaptlab": [], "fastai": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "spec.json").write_text(json.dumps(spec))
        for index in range(args.rounds):
            run_dir, out = tmp / f"adaptlab-{index}", tmp / f"fastai-{index}"
            launch, end, wall = timed(
                [sys.executable, "-m", "adaptlab.cli", "run", "wildlife", "--dataset", "animals",
                 "--backbone", "efficientnet_lite0", "--strategy", "full",
                 "--epochs", str(args.epochs), "--seed", str(args.seed),
                 "--set", f"batch_size={args.batch_size}", "--set", f"image_size={args.image_size}",
                 "--device", "cpu", "--out", str(run_dir), "--quiet"],
                env, tmp / f"adaptlab-{index}.log", run_dir)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            config = json.loads((run_dir / "config.json").read_text())
            rounds["adaptlab"].append({"wall": wall, "test": metrics["final"]["test"],
                                       "best_epoch": metrics["best_epoch"], "config": config,
                                       "splits": metrics["split_sizes"],
                                       "phases": adaptlab_phases(run_dir, launch, end)})
            launch, end, wall = timed([sys.executable, __file__, "--worker",
                                       str(tmp / "spec.json"), str(out)],
                                      env, tmp / f"fastai-{index}.log", out)
            result = json.loads((out / "result.json").read_text())
            rounds["fastai"].append({"wall": wall, "test": result["test"], "result": result,
                                     "phases": fastai_phases(result, launch, end)})
            print(f"round {index}: " + ", ".join(
                f"{tool} {r[-1]['wall']:.1f} s (test accuracy {r[-1]['test']['accuracy']:.3f}, "
                f"macro-F1 {r[-1]['test']['macro_f1']:.3f})" for tool, r in rounds.items()),
                flush=True)
    section = _section(args, rounds)
    print(section)
    if not args.print_only:
        write_section("fastai-wildlife-cpu", section)


def _section(args, rounds: dict) -> str:
    a_runs, f_runs = rounds["adaptlab"], rounds["fastai"]
    a_wall, f_wall = (statistics.median(r["wall"] for r in runs) for runs in (a_runs, f_runs))
    ratio = a_wall / f_wall
    paired = sorted(a["wall"] / f["wall"] for a, f in zip(a_runs, f_runs, strict=True))
    med = lambda runs, key: statistics.median(r["test"][key] for r in runs)  # noqa: E731
    phase = lambda runs, key: statistics.median(r["phases"][key] for r in runs)  # noqa: E731
    a_acc, f_acc, a_f1, f_f1 = (med(a_runs, "accuracy"), med(f_runs, "accuracy"),
                                med(a_runs, "macro_f1"), med(f_runs, "macro_f1"))
    config, result, splits = a_runs[0]["config"], f_runs[0]["result"], a_runs[0]["splits"]
    rows = [f"| {label} | {seconds(phase(a_runs, key))} | "
            f"{seconds(None if f_runs[0]['phases'][key] is None else phase(f_runs, key))} |"
            for key, label in PHASES.items()]
    faster = "fastai" if f_wall < a_wall else "adaptlab"
    extra = phase(a_runs, "baselines") + phase(a_runs, "after") - phase(f_runs, "after")
    epochs_gap = phase(a_runs, "epochs") - phase(f_runs, "epochs")
    speed = (f"**{faster} is faster: adaptlab takes {ratio:.2f} of fastai's wall time** "
             f"(paired per-round ratios {paired[0]:.3f}-{paired[-1]:.3f}). The epochs "
             f"themselves take {phase(a_runs, 'epochs'):.1f} s in adaptlab and "
             f"{phase(f_runs, 'epochs'):.1f} s in fastai ({epochs_gap:+.1f} s); the work fastai "
             f"does not do (the baselines; at the end, train and val evaluated besides test, "
             f"the save-reload check and the report files, net of fastai's test predictions "
             f"and export) costs adaptlab {extra:+.1f} s, without which it would take about "
             f"{(a_wall - extra) / f_wall:.2f} of fastai's wall time.")
    if (a_acc, a_f1) == (f_acc, f_f1):
        quality = "Both tools reach the same held-out accuracy and macro-F1."
    else:
        better = "adaptlab" if (a_f1, a_acc) > (f_f1, f_acc) else "fastai"
        quality = (f"On held-out test, **{better} is better**: macro-F1 {a_f1:.3f} (adaptlab) "
                   f"against {f_f1:.3f} (fastai), accuracy {a_acc:.3f} against {f_acc:.3f}, "
                   f"on {splits['test']} test photos (one photo is "
                   f"{1 / splits['test']:.3f} of accuracy), one seed: the gap is not measured "
                   f"against seed-to-seed variation.")
    if CROWDED:
        kept = sum(k for _, k in CROWDED)
        quality += (f" {len(CROWDED)} measurement(s) found other processes keeping "
                    f"{min(c for c, _ in CROWDED):.2f}-{max(c for c, _ in CROWDED):.2f} cores "
                    f"busy and were " + (f"taken again ({kept} kept after three tries)."
                                          if kept else "taken again."))
    rounds_text = ", ".join(f"{a['wall']:.1f} / {f['wall']:.1f}"
                            for a, f in zip(a_runs, f_runs, strict=True))
    lrs = " and ".join(f"{lr:g}" for lr in result["lrs"])
    from adaptlab.strategies.base import NEW_HEAD_LR

    mode = config["strategy_options"].get("norm_stats", "update")
    norm_stats = ("each batch's statistics, updating their running ones (`norm_stats=update`)"
                  if mode == "update" else
                  f"their pre-trained running statistics (`norm_stats={mode}`; fastai's "
                  "normalise by each batch and update theirs)")
    best = ", ".join(str(e) for e in sorted({r["best_epoch"] for r in a_runs}))
    return (
        "## adaptlab against fastai: full fine-tuning on the wildlife demo (cpu)\n\n"
        f"{machine()}; both tools at OMP_NUM_THREADS={args.threads} (fastai's process: "
        f"{result['threads']} torch threads), each run a fresh process timed whole (imports, "
        f"weights, data included), {args.rounds} alternating rounds (adaptlab first). "
        f"`bench/fastai_wildlife.py`: `adaptlab run wildlife --dataset animals --backbone "
        f"efficientnet_lite0 --strategy full --epochs {args.epochs} --set "
        f"batch_size={args.batch_size} --set image_size={args.image_size}` against fastai's "
        f"`vision_learner` + `fine_tune({args.epochs - 1}, freeze_epochs=1)` "
        f"({args.epochs} passes over the training photos in both). Shared: the same "
        f"EfficientNet-Lite0 module and offline ImageNet weights (adaptlab's "
        f"`efficientnet_lite0()`, given to `vision_learner` as its architecture, which cuts it "
        f"before the pooling), the same splits through adaptlab's dataset code (train "
        f"{splits['train']}, val {splits['val']}, test {splits['test']} photos), "
        f"{args.image_size}px, random-resized crops (scale 0.5-1) and horizontal flips for "
        f"training and the same central crop for evaluation, the backbone's mean and std, "
        f"batch {args.batch_size} with the last short batch kept, class-weighted (balanced) "
        f"cross-entropy, no loader workers, seed {args.seed}.\n\n"
        "| tool | wall s (median) | rounds (adaptlab / fastai) | test accuracy | test macro-F1 |\n"
        "|---|---|---|---|---|\n"
        f"| adaptlab | {a_wall:.1f} | {rounds_text} | {held_out_metric(a_runs, 'accuracy')} | "
        f"{held_out_metric(a_runs, 'macro_f1')} |\n"
        f"| fastai | {f_wall:.1f} | | {held_out_metric(f_runs, 'accuracy')} | "
        f"{held_out_metric(f_runs, 'macro_f1')} |\n\n"
        f"**adaptlab / fastai wall-time ratio: {ratio:.3f}.** {speed} {quality}\n\n"
        "Where the time goes (median seconds over rounds; adaptlab from its run folder's "
        "`events.jsonl` and file times, fastai from timestamps around `fine_tune`; the phases "
        "sum to the wall time):\n\n"
        "| phase | adaptlab | fastai |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "What differs, each tool run as its own recipe: adaptlab's `full` trains every "
        f"parameter from the first step (AdamW, lr {config['lr']:g} for the body, at least "
        f"{NEW_HEAD_LR:g} for the new linear head on the pooled features, weight decay "
        f"{config['weight_decay']:g}, {config['schedule']} schedule with "
        f"{config['warmup_ratio']:g} of the steps warming up, gradient clipping), its "
        f"batch-norm layers normalising by {norm_stats}, and ends on the epoch with the best val "
        f"macro-F1 (epoch {best} of {args.epochs}). fastai trains its own head "
        f"({', '.join(result['head'])}) for one epoch with the body frozen but its batch-norm "
        f"layers training (one-cycle to lr {result['frozen_lr']:g}; the backward pass still runs "
        f"through the body, without the convolutions' weight gradients), then "
        f"unfreezes everything for {args.epochs - 1} one-cycle epochs with discriminative rates "
        f"over its {result['groups']} parameter groups (body and head: peak {lrs}); Adam with "
        "decoupled weight decay 0.01, no clipping, and it ends on its last epoch. adaptlab's "
        "`llrd` was not used: it decays the rate block by block, while fastai's default split "
        "of a model it has no entry for gives the whole body one rate; adaptlab has no frozen "
        "first epoch. Besides training, adaptlab computes the unadapted nearest-class-mean "
        "baselines, evaluates train, val and test at the end, checks that the saved weights "
        "reload to the same outputs and writes metrics, costs and a model card; fastai, as "
        "run here, predicts the test split and pickles the Learner, and does none of the "
        "rest.\n" + (f"\n{args.note}\n" if args.note else ""))


if __name__ == "__main__":
    main()
