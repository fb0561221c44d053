"""Pack what the GPU rows of the accuracy protocol need into a folder small enough to travel to a GPU
machine that has no network (the device's whole working tree is limited to 64 MiB):

- articles.parquet: every shared article with its id, outlet, URL and label, and as text the prepared
  model input (title + body, whitespace normalised) cut after its first max_length + 8 tokens at a
  word boundary: exactly the tokens training at --max-length reads (checked here, article by article,
  with the library's own encoder), zstd-compressed;
- base-model/: the pretrained encoder with its float weights stored as float16 (training loads any
  checkpoint as float32, model.load_base_model: the same values, half the bytes) and its tokenizer.

    python -m bench.gpu.pack --max-length 256 --out .gpu     # then see bench/gpu/transformer.py

The pack is a derived copy: never edit it, make it again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import REPO, SHARED_DATA, minilm_path  # noqa: E402

TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MARGIN = 8  # tokens kept past max_length, so "was the text truncated" reads the same from the pack


def ids_digest(ids: list[str]) -> str:
    """A fingerprint of the article order: the GPU run and the local combination must see the same rows."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def head_cut(tokenizer, texts: list[str], n_tokens: int) -> list[str]:
    """Each text cut at the first whitespace after its first n_tokens content tokens (whole if shorter)."""
    from allsides_batch.text.prep import char_budget, cut_text

    out = []
    step = 512
    for start in range(0, len(texts), step):
        chunk = texts[start:start + step]
        cut = [cut_text(t, char_budget(n_tokens)) for t in chunk]
        enc = tokenizer(cut, add_special_tokens=False, truncation=True, max_length=n_tokens,
                        return_offsets_mapping=True, return_attention_mask=False)
        for text, piece, offsets in zip(chunk, cut, enc["offset_mapping"]):
            if len(offsets) < n_tokens and len(piece) < len(text):  # the character cut was too short
                offsets = tokenizer(text, add_special_tokens=False, truncation=True, max_length=n_tokens,
                                    return_offsets_mapping=True)["offset_mapping"]
            if len(offsets) < n_tokens:
                out.append(text)
                continue
            end = offsets[-1][1]
            spaces = [i for i in (text.find(" ", end), text.find("\n", end)) if i >= 0]
            out.append(text[:min(spaces)] if spaces else text)
    return out


def pack_model(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(src / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, str(dst / "model.safetensors"), metadata={"format": "pt", "packed_from": "float32"})
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA))
    ap.add_argument("--base-model", default=None, help="encoder directory (default: pretrained MiniLM-L6)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per article the GPU rows will train at")
    ap.add_argument("--out", default=str(REPO / ".gpu"))
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from allsides_batch.models.hub import load_tokenizer
    from allsides_batch.text.prep import TextPrep, encode
    from allsides_batch.training.data import load_labelled

    if args.base_model is None:
        args.base_model = minilm_path()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_labelled([args.data], prep=TextPrep(), fingerprint=False)
    tokenizer = load_tokenizer(args.base_model)
    texts = head_cut(tokenizer, data.texts, args.max_length + MARGIN)
    # The pack must give training exactly the ids the full text gives: checked for every article.
    full_ids, _, full_cut = encode(tokenizer, data.texts, args.max_length)
    pack_ids, _, pack_cut = encode(tokenizer, texts, args.max_length)
    bad = [i for i in range(len(texts)) if full_ids[i] != pack_ids[i] or full_cut[i] != pack_cut[i]]
    if bad:
        sys.exit(f"{len(bad)} article(s) tokenize differently from the pack (first: {data.ids[bad[0]]})")
    table = pa.table({"id": data.ids, "text": texts, "source": data.sources,
                      "url": data.urls if data.urls is not None else [None] * len(texts),
                      "bias": pa.array(data.labels, pa.int8())})
    pq.write_table(table, str(out / "articles.parquet"), compression="zstd", compression_level=19)
    again = load_labelled([str(out / "articles.parquet")], prep=TextPrep(), fingerprint=False)
    if again.texts != texts or again.ids != data.ids or not (again.labels == data.labels).all():
        sys.exit("the pack does not read back as written: texts, ids or labels differ")
    pack_model(Path(args.base_model), out / "base-model")
    meta = {"articles": len(texts), "ids_sha256_16": ids_digest(data.ids), "max_length": args.max_length,
            "source_data": str(args.data), "base_model": Path(args.base_model).name,
            "checked_articles": len(texts)}
    (out / "pack.json").write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    print(json.dumps({**meta, "bytes": sum(sizes.values()), "seconds": round(time.perf_counter() - started)}),
          flush=True)


if __name__ == "__main__":
    main()
