"""Independent references the tests compare the package against: written plainly with the Hugging Face
classes, without the package's scorer."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch


def fine_tune_tiny(tiny_model_dir: str, articles_sample, out) -> str:
    """The tiny DistilBERT fine-tuned on the 600 sample articles' left/center/right labels: 100 steps of 32
    at 64 tokens (about 8 s on one thread), saved with its tokenizer in `out`. It learns them in part (76%
    of its own training articles right, all three labels predicted) without every answer being a
    certainty, and unlike the random tiny model its answers depend on the text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from allsides_batch.models.identity import LABEL2ID
    from allsides_batch.text.prep import prepare_text

    rows = pq.read_table(articles_sample).to_pylist()
    labels = torch.tensor([LABEL2ID[r["bias_text"]] for r in rows])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = tok([prepare_text(r["title"], r["text"]) for r in rows], truncation=True, max_length=64, padding=True,
              return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy two-core machine ran 10x slower
    torch.manual_seed(0)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        model.train()
        order = torch.Generator().manual_seed(0)
        for _ in range(100):
            b = torch.randint(0, len(rows), (32,), generator=order)
            loss = model(input_ids=enc["input_ids"][b], attention_mask=enc["attention_mask"][b], labels=labels[b]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def plain_chunk_probs(model_dir, texts: list[str], max_length: int, stride: int, max_windows: int,
                       temperature: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """Chunk mode written out plainly, independent of the scorer: each text's content tokens from the
    Hugging Face tokenizer; windows of max_length - 2 of them, a new one starting every max_length - 2 -
    stride tokens (so consecutive windows share `stride`) until one reaches the end, the first max_windows
    kept; each window as [CLS] window [SEP] through AutoModelForSequenceClassification alone;
    softmax(logits / temperature) per window; the text's probabilities are the windows' average weighted
    by their content tokens (an empty text: its one special-tokens-only window, weight 1). Returns the
    (N, 3) left/center/right probabilities and the number of windows each text has before the cap."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    order = [model.config.label2id[name] for name in ("left", "center", "right")]
    window = max_length - 2
    out, n_windows = [], []
    with torch.inference_mode():
        for text in texts:
            content = tok(text, add_special_tokens=False)["input_ids"]
            starts = [0]
            while starts[-1] + window < len(content):
                starts.append(starts[-1] + window - stride)
            n_windows.append(len(starts))
            probs, weights = [], []
            for start in starts[:max_windows]:
                piece = content[start:start + window]
                ids = torch.tensor([[tok.cls_token_id, *piece, tok.sep_token_id]])
                logits = model(input_ids=ids).logits[0, order]
                probs.append(torch.softmax(logits / temperature, -1).numpy())
                weights.append(max(len(piece), 1))
            out.append(np.average(probs, axis=0, weights=weights))
    return np.array(out), n_windows
