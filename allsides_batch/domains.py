"""Registered web domains: the outlet key that groups one publisher's many AllSides source names.

One domain hosts many source names (nytimes.com: 24, foxnews.com: 22, cnn.com: 19, most of them
columnists), so grouping by source name lets a held-out outlet's house style into training.
`aggregate --outlet-key domain` applies the same rule with polars expressions (analysis/aggregate.py).
"""

from __future__ import annotations

import re

# Public suffixes of two labels that are common in news URLs; the registered domain under them has
# three labels (bbc.co.uk). A full public-suffix list would be a new dependency for little gain here.
MULTI_PART_SUFFIXES = (
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp", "co.in",
    "com.br", "com.mx", "co.za", "com.cn", "com.hk", "com.sg", "co.il", "com.tr", "co.kr",
)
HOST_PATTERN = r"^\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^@/?#\s]*@)?([^/:?#\s]+)"
_HOST = re.compile(HOST_PATTERN)
_IPV4 = re.compile(r"^\d+(\.\d+){3}$")


def registered_domain(url: str | None) -> str | None:
    """https://www.money.cnn.com/x → cnn.com, www.bbc.co.uk → bbc.co.uk; None when there is no host."""
    if not url:
        return None
    match = _HOST.match(url)
    if not match:
        return None
    host = match.group(1).lower().strip(".")
    if _IPV4.match(host):
        return host
    parts = host.split(".")
    if len(parts) < 2:
        return None
    if len(parts) >= 3 and ".".join(parts[-2:]) in MULTI_PART_SUFFIXES:
        return ".".join(parts[-3:])
    return ".".join(parts[-2:])


def outlet_groups(sources: list[str], urls: list[str | None] | None, group_by: str) -> list[str]:
    """The group key of each article: its source name, or its URL's registered domain (the source name
    where the URL has none)."""
    if group_by == "source" or urls is None:
        return list(sources)
    out = []
    for source, url in zip(sources, urls):
        domain = registered_domain(url)
        out.append(f"domain:{domain}" if domain else f"source:{source}")
    return out
