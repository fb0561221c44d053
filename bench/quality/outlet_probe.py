"""How well can a bag-of-words model name an article's outlet, with and without outlet masking?

A diagnostic for allsides_batch/text/masking.py: TF-IDF (case-sensitive) + logistic regression over the
20 largest outlets of the shared data, 150 articles each, 70/30 split. Masking should lower the
accuracy; what remains is house style, which masking does not touch.

    python -m bench.quality.outlet_probe
"""

from __future__ import annotations

import collections
import random

import numpy as np
import pyarrow.parquet as pq
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from allsides_batch.text.masking import MASK_VERSION
from allsides_batch.text.prep import TextPrep, prepare_text
from bench.common import SHARED_DATA


def main(outlets: int = 20, per_outlet: int = 150, seed: int = 0) -> None:
    rows = pq.read_table(SHARED_DATA, columns=["source", "title", "text"]).to_pylist()
    top = [s for s, _ in collections.Counter(r["source"] for r in rows).most_common(outlets)]
    rng = random.Random(seed)
    rng.shuffle(rows)
    taken: collections.Counter = collections.Counter()
    pick = []
    for r in rows:
        if r["source"] in top and taken[r["source"]] < per_outlet:
            taken[r["source"]] += 1
            pick.append(r)
    y = np.array([top.index(r["source"]) for r in pick])
    train = np.arange(len(pick)) < int(0.7 * len(pick))
    for mask in (False, True):
        prep = TextPrep(mask_outlet=mask, mask_version=MASK_VERSION if mask else 0)
        texts = [prepare_text(r["title"], r["text"], prep, source=r["source"]) for r in pick]
        vec = TfidfVectorizer(min_df=2, max_features=50000, lowercase=False, token_pattern=r"\S+")
        x = vec.fit_transform(texts)
        clf = LogisticRegression(max_iter=300, C=10).fit(x[train], y[train])
        acc = float((clf.predict(x[~train]) == y[~train]).mean())
        print(f"masking {'on ' if mask else 'off'}: outlet accuracy {acc:.3f} over {outlets} outlets "
              f"(chance {1 / outlets:.3f}), {int((~train).sum())} test articles")


if __name__ == "__main__":
    main()
