"""allsides-batch: score the political slant of news articles at scale."""

__version__ = "0.1.0"

LABELS: tuple[str, str, str] = ("left", "center", "right")
