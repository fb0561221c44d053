"""Outlet-identity masking: strip what lets a model recognise the outlet instead of reading the slant.

Applied inside text.prepare_text when the model's TextPrep says so, so training and scoring mask
identically. What goes:
- the outlet's own name and its aliases (derived from the `source` value plus a table for outlets
  whose names in running text differ from their AllSides name), replaced by a neutral placeholder;
- datelines and wire tags at paragraph starts ("WASHINGTON (Reuters) -", "Los Angeles (CNN)",
  "WASHINGTON –");
- bylines, "contributed to this report", "Contributing:", "Reporting by … Editing by" lines;
- URLs, bare web domains, e-mail addresses and Twitter handles;
- house boilerplate lines (subscribe, copyright, newsletter, "Read or Share this story", video and
  photo credits, column disclaimers) and The Hill's inline "… MORE" name expansions.

Only line-level removals and inline substitutions: the slant-bearing sentences stay untouched.
Every pattern was written against real articles of the shared AllSides data (tests/text/test_masking.py).
"""

from __future__ import annotations

import re
from functools import lru_cache

MASK_VERSION = 1
PLACEHOLDER = "[outlet]"

# Names an outlet goes by in running text that cannot be derived from its AllSides name. Keys are
# lower-case stems of the AllSides `source` (before any " - " or "(...)" qualifier).
_ALIASES: dict[str, tuple[str, ...]] = {
    "cnn": ("CNN", "CNNMoney", "CNN Money", "CNNPolitics", "CNN Politics", "CNNOpinion"),
    "fox": ("Fox News", "FOX News", "Fox News Channel", "Fox Business", "FoxNews", "Fox News First"),
    "fox online": ("Fox News", "FOX News", "Fox News Channel", "Fox Business", "FoxNews", "Fox News First"),
    "fox news": ("Fox News", "FOX News", "Fox News Channel", "Fox Business", "FoxNews", "Fox News First"),
    "new york times": ("The New York Times", "New York Times", "NYTimes", "NYT", "The Times"),
    "washington times": ("The Washington Times", "Washington Times"),
    "washington post": ("The Washington Post", "Washington Post", "The Post"),
    "new york post": ("The New York Post", "New York Post", "NY Post", "The Post", "Post wires"),
    "politico": ("Politico", "POLITICO", "Politico Pro", "Politico Magazine", "Playbook"),
    "npr": ("NPR", "National Public Radio", "All Things Considered", "Morning Edition"),
    "usa today": ("USA TODAY", "USA Today", "USA TODAY Network"),
    "vox": ("Vox",),
    "the hill": ("The Hill", "TheHill"),
    "christian science monitor": ("The Christian Science Monitor", "Christian Science Monitor", "The Monitor",
                                  "CSMonitor"),
    "national review": ("National Review", "National Review Online", "NRO", "NR"),
    "reuters": ("Reuters", "Thomson Reuters"),
    "bbc": ("BBC", "BBC News"),
    "the guardian": ("The Guardian", "Guardian"),
    "cbn": ("CBN", "CBN News", "Christian Broadcasting Network"),
    "breitbart": ("Breitbart", "Breitbart News"),
    "wall street journal": ("The Wall Street Journal", "Wall Street Journal", "WSJ"),
    "associated press": ("The Associated Press", "Associated Press", "AP"),
    "the daily caller": ("The Daily Caller", "Daily Caller", "Daily Caller News Foundation", "DCNF"),
    "daily beast": ("The Daily Beast", "Daily Beast"),
    "american spectator": ("The American Spectator", "American Spectator", "TAS"),
    "theblaze.com": ("TheBlaze", "The Blaze", "Blaze Media", "BlazeTV"),
    "bloomberg": ("Bloomberg", "Bloomberg News", "Bloomberg Opinion"),
    "the atlantic": ("The Atlantic",),
    "cbs news": ("CBS News", "CBS", "CBSN"),
    "abc news": ("ABC News", "ABC"),
    "nbc news": ("NBC News", "NBC"),
    "msnbc": ("MSNBC",),
    "al jazeera": ("Al Jazeera",),
    "daily kos": ("Daily Kos",),
    "the daily wire": ("The Daily Wire", "Daily Wire"),
    "newsmax": ("Newsmax", "NewsMax"),
    "townhall": ("Townhall", "Townhall.com"),
    "time magazine": ("TIME", "Time magazine"),
    "chicago sun-times": ("Sun-Times", "Chicago Sun-Times"),
    "mother jones": ("Mother Jones",),
    "propublica": ("ProPublica",),
    "huffpost": ("HuffPost", "Huffington Post", "HuffPo"),
    "the week": ("The Week",),
    "yahoo! the 360": ("The 360", "Yahoo News", "Yahoo"),
}
# AllSides labels that are not names anyone writes in an article.
_NOT_NAMES = {"guest writer", "news", "the", "opinion", "online", "editorial", "web"}

# Wire services and broadcasters that appear in parenthesised wire tags at the top of a story.
_WIRE = (r"Reuters|AP|AFP|CNN|CNN Business|CNNMoney|CNSNews\.com|Bloomberg|UPI|The Hill|Fox News|NBC News|"
         r"ABC News|CBS News|The Daily Signal|The Conversation|Kaiser Health News|KHN|Axios|RNS|Xinhua")

_DATELINE = re.compile(
    r"^(?:[A-Z][A-Za-z.'\-]*(?:[ ,]+[A-Z][A-Za-z.'\-]*){0,4},?\s*)?\((?:" + _WIRE + r")\)\s*(?:[-—–:]+\s*)?"
    r"|^[A-Z][A-Z.'\-]{2,}(?:[ ,]+[A-Z][A-Za-z.'\-]*){0,4}\s+[-—–]+\s+",
    re.MULTILINE,
)
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|co\.uk|gov|edu|io)(?:/\S*)?\b",
                  re.IGNORECASE)
_URL_HINT = re.compile(r"https?://|www\.|\.(?:com|org|net|co\.uk|gov|edu|io)\b", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_HANDLE = re.compile(r"(?<![\w@])@\w{2,}")
# The Hill expands a politician's name into the full name glued to a run of headlines ending in
# "MORE": "Adam Schiff Adam Bennett SchiffGraham: Senate trial … MORE (D-Calif.)" → "Adam Schiff (D-Calif.)".
_HILL_EXPANSION = re.compile(r"\b([A-Z][\w'’\-]+) (?:[A-Z(][\w.'’()\-]* ){1,3}\1(?=[A-Z\"“'‘])[^\n]{0,600}? MORE\b")
_HILL_MORE = re.compile(r"\s+MORE\b")
_PHOTO_CREDIT = re.compile(
    r"\(\s*(?:Photo|PHOTOS?|Image|Video)s?:[^)]{0,120}\)|^AP Photos?\b|"
    r"\((?:[A-Z][\w.' ]*/)?(?:AP|REUTERS|Reuters|AFP|Getty Images|Getty|Pixabay|Bloomberg|EPA)"
    r"(?: Photo)?(?:/[^)]{0,60})?\)"
    r"|\|?\s*[A-Z][\w.'\- ]{0,40}/(?:AP Photo|AP|Getty Images|AFP|Reuters|REUTERS|POLITICO|Bloomberg)\b"
)
# Whole lines (paragraphs) that are house boilerplate, bylines or credits. Only short lines are
# tested (see _BOILERPLATE_MAX_CHARS), so a long paragraph that merely mentions "copyright" stays.
# Matched at the start of a line (re.match) or anywhere in it (re.search); two patterns rather than
# one with ^-anchors, because a search over one big alternation tries every anchor at every position.
_BOILERPLATE_START = re.compile(
    r"sign up|contributing:|reporting by|writing by|by$|follow (?:us|him|her|them|@|[\w ]+ on twitter)|"
    r"(?:join|like) us on|story highlights|close\b|media playback|image (?:copyright|caption)|"
    r"advertisement$|ad$|photo$|read more|related:|go deeper|share this article|share tweet|"
    r"analysis/opinion:?$|editor['’]?s note|updated\b.{0,60}$|\d+ years? ago$|"
    r"\d+ (?:min|minutes?|hours?) ago$|urgent:?$|next image|image \d+ of \d+|send (?:letters|a tip)|"
    r"contact us|get (?:all the latest|breaking|real-time)|want (?:more|[\w ]+ in your inbox)|print$|email$|"
    r"listen\b.{0,40}$|watch:|content created by|every day at|poster=|with post wires$|"
    r"this (?:story|article|report) (?:has been|was|is) ",
    re.IGNORECASE,
)
_BOILERPLATE_ANYWHERE = re.compile(
    r"copyright|©|all rights reserved|reprint permission|subscribe|newsletters?\b|read or share this story|"
    r"contributed to this report|editing by|facebook\.com/|opinions expressed by|rush transcript|"
    r"transcripts? (?:are|is) created|if you enjoyed this article|is a (?:nonprofit|non-profit) newsroom",
    re.IGNORECASE,
)
# Bylines and author bios: case-sensitive, so "By contrast, ..." is not a byline.
_BYLINE = re.compile(
    r"^By [A-Z][\w.'’\-]+(?: [A-Z][\w.'’\-]+){0,3}\b(?:\s*(?:,|\||and|$))"
    r"|^(?:[—–-]\s*)?[A-Z][\w.'’\-]+(?: [A-Z][\w.'’\-]+){0,3} is (?:a |an |the )?[\w\-,’' ]{0,60}"
    r"(?:editor|columnist|correspondent|reporter|writer|contributor|fellow|host|author)\b"
)
_BOILERPLATE_MAX_CHARS = 300
# A byline: a short line of two to four capitalised names and nothing else (USA TODAY opens with them).
_NAME_LINE = re.compile(r"^(?:[A-Z][a-z'’\-]+\.? ){1,3}[A-Z][a-z'’\-]+$")


def outlet_aliases(source: str | None) -> tuple[str, ...]:
    """Names the outlet `source` goes by, longest first (so 'Fox News Channel' wins over 'Fox News')."""
    if not source:
        return ()
    return _aliases(source.strip())


@lru_cache(maxsize=4096)
def _aliases(source: str) -> tuple[str, ...]:
    base = re.sub(r"\s*\([^)]*\)", "", source).split(" - ")[0].strip()
    names = {source, base}
    for suffix in (" Online News", " News", " Online", " Magazine", ".com"):
        if base.endswith(suffix) and len(base) > len(suffix) + 2:
            names.add(base[: -len(suffix)].strip())
    names |= {n[4:] for n in list(names) if n.startswith("The ")}
    # "Washington Times" is also written "The Washington Times"; acronyms and qualified names are not.
    names |= {f"The {n}" for n in list(names) if " " in n and not n.startswith("The ") and n != source
              and not n.isupper()}
    for key in {base.lower(), base.lower().removesuffix(" online news").removesuffix(" news")}:
        names.update(_ALIASES.get(key, ()))
    names = {n for n in names if len(n) >= 2 and n.lower() not in _NOT_NAMES}
    return tuple(sorted(names, key=lambda n: (-len(n), n)))


@lru_cache(maxsize=4096)
def _alias_pattern(source: str) -> re.Pattern | None:
    names = outlet_aliases(source)
    if not names:
        return None
    # Case-sensitive on purpose: 'Reason' the magazine, not 'reason' the word; ALL-CAPS forms added.
    forms = sorted({n for name in names for n in (name, name.upper())}, key=lambda n: (-len(n), n))
    alternation = "|".join(re.escape(n) for n in forms)
    return re.compile(rf"(?<![\w.])(?:{alternation})(?:['’]s)?(?![\w])")


def mask_outlet_identity(text: str, source: str | None = None) -> str:
    """`text` (already whitespace-normalised, paragraphs separated by blank lines) with the outlet's
    identity removed. Without `source` only the outlet-independent parts apply."""
    kept = []
    for para in text.split("\n"):
        line = para.strip()
        if not line:
            kept.append("")
            continue
        if _is_boilerplate(line):
            continue
        line = _DATELINE.sub("", line, count=1)
        kept.append(line)
    out = "\n".join(kept)
    out = _PHOTO_CREDIT.sub("", out)
    if _URL_HINT.search(out):  # cheap test first: the full URL pattern is slow on text without any
        out = _URL.sub("", out)
    if "@" in out:
        out = _HANDLE.sub("", _EMAIL.sub("", out))
    out = _HILL_EXPANSION.sub(r"\1", out)
    out = _HILL_MORE.sub("", out)
    if source:
        pattern = _alias_pattern(source.strip())
        if pattern is not None:
            out = pattern.sub(PLACEHOLDER, out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r"\n\s*\n+", "\n\n", out)
    return out.strip()


def _is_boilerplate(line: str) -> bool:
    if len(line) > _BOILERPLATE_MAX_CHARS:
        return False
    return bool(_BOILERPLATE_START.match(line) or _BOILERPLATE_ANYWHERE.search(line) or _BYLINE.match(line)
                or _NAME_LINE.match(line))
