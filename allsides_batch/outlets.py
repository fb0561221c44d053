"""The outlets a model was trained on, kept in its model directory as `training_outlets.json`.

A model places the outlets it was trained on from memory: their positions are in-sample, and say little
about how it places an outlet it has never seen. `train` records them (source names and the registered
domains of their URLs, with article counts); `aggregate` marks each outlet `seen_in_training` /
`domain_seen_in_training`, and `evaluate` says `held_out: false` when the evaluated outlets overlap them.

```
{"version": 1, "fitted_on": "training and validation rows", "articles": 36254,
 "sources": {"CNN (Online News)": 2300, ...}, "domains": {"cnn.com": 2290, ...},
 "validation": {"articles": 3600, "sources": {...}, "domains": {...}}}
```
"sources"/"domains" are the rows the saved weights were fitted on (a linear model refit on its validation
rows includes them); "validation" holds the rows used to choose and calibrate the model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .domains import registered_domain
from .errors import UserError
from .storage.io import read_json

TRAINING_OUTLETS_FILE = "training_outlets.json"
VERSION = 1


def _counts(sources: Sequence[str], urls: Sequence[str | None] | None) -> dict:
    domains = Counter(d for d in (registered_domain(u) for u in (urls or [])) if d)
    return {"articles": len(sources), "sources": dict(sorted(Counter(map(str, sources)).items())),
            "domains": dict(sorted(domains.items()))}


def training_outlets(fitted_sources: Sequence[str], fitted_urls: Sequence[str | None] | None,
                     validation_sources: Sequence[str], validation_urls: Sequence[str | None] | None,
                     refit_on_validation: bool) -> dict:
    """The JSON `train` writes: the outlets of the rows the weights were fitted on, and the validation rows'."""
    return {"version": VERSION,
            "fitted_on": "training and validation rows" if refit_on_validation else "training rows",
            **_counts(fitted_sources, fitted_urls), "validation": _counts(validation_sources, validation_urls)}


@dataclass(frozen=True)
class TrainingOutlets:
    sources: dict[str, int]
    domains: dict[str, int]
    articles: int
    fitted_on: str


def read_training_outlets(model_dir: str | None) -> TrainingOutlets | None:
    """The model directory's training outlets, or None where it has no such file (a model trained before
    they were recorded, or a hub model). A damaged file is an error that says what to do."""
    path = os.path.join(model_dir or "", TRAINING_OUTLETS_FILE)
    if not model_dir or not os.path.isfile(path):
        return None
    try:
        raw = read_json(path)
        sources = {str(k): int(v) for k, v in raw["sources"].items()}
        domains = {str(k): int(v) for k, v in raw["domains"].items()}
        return TrainingOutlets(sources=sources, domains=domains, articles=int(raw["articles"]),
                               fitted_on=str(raw.get("fitted_on", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); retrain the model, or delete the file to "
                        "aggregate without marking seen outlets") from exc
