"""Write the install files that come from requirements/lock.txt, or check that they match it.

    python requirements/generate.py          # rewrite torch.txt, worker.txt and flows.txt (`make lock` runs it)
    python requirements/generate.py --check  # exit 1, naming each file, where one differs from what the lock gives

requirements/lock.txt (pip-compile, hashed) is the only place versions are resolved. From it:

- torch.txt: the torch pin of requirements/torch.in and torch's own dependencies at the lock's versions,
  without hashes (a CPU and a CUDA build of torch have different files). Installed first, as its own step.
- worker.txt, flows.txt: what the GPU worker image installs for its `worker` and `flows` variants: the
  lock's hashed entries, copied verbatim, for the dependency closure of the package's base dependencies
  plus that extra (plus torch's). The closure is read from the lock's own "# via" annotations.

Pure text: nothing here looks at what is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCK = HERE / "lock.txt"
TORCH_IN = HERE / "torch.in"
IMAGE_EXTRAS = ("worker", "flows")
PROJECT = "allsides-batch"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    version: str
    block: list[str]  # the pin line and its --hash lines, as in the lock
    parents: set[str] = field(default_factory=set)


def read_lock(text: str) -> dict[str, Entry]:
    """The lock's pinned entries by canonical name, each with its hashed block and the packages (or
    inputs) that pull it in."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = Entry(canonical(match[1]), match[2], [line])
            entries[current.name] = current
            in_via = False
        elif current is not None and line.startswith("    --hash="):
            current.block.append(line)
        elif current is not None and line.startswith("    # via"):
            rest = line[len("    # via"):].strip()
            in_via = not rest
            if rest:
                current.parents.add(_parent(rest))
        elif current is not None and in_via and line.startswith("    #   "):
            current.parents.add(_parent(line[len("    #   "):]))
        else:
            current, in_via = None, False
    if not entries:
        raise SystemExit(f"{LOCK}: no pinned entries; run `make lock`")
    for entry in entries.values():
        if len(entry.block) < 2:
            raise SystemExit(f"{LOCK}: {entry.name} has no --hash lines; run `make lock` (it compiles with hashes)")
    return entries


def _parent(text: str) -> str:
    """'allsides-batch (pyproject.toml)' -> 'allsides-batch'; '-c requirements/torch.in' -> '-c ...'."""
    text = text.strip()
    return text if text.startswith("-") else canonical(text.split(" ")[0])


def torch_pin(text: str) -> tuple[str, str]:
    """('torch', version) from requirements/torch.in: one exact pin without a local version label."""
    pins = [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
    if len(pins) != 1 or not _PIN.match(pins[0]) or canonical(_PIN.match(pins[0])[1]) != "torch":
        raise SystemExit(f"{TORCH_IN}: expected exactly one line 'torch==VERSION', found {pins}")
    version = _PIN.match(pins[0])[2]
    if "+" in version:
        raise SystemExit(f"{TORCH_IN}: {pins[0]} has a local version label; the CPU and CUDA builds must both match it")
    return "torch", version


def extra_roots(project: dict, extra: str | None) -> set[str]:
    """Canonical names of the direct requirements of the base install plus `extra`, the package's own
    extras (flows = allsides-batch[worker,analysis]) expanded."""
    extras = project.get("optional-dependencies", {})
    roots: set[str] = set()
    todo = list(project.get("dependencies", [])) + list(extras[extra] if extra else [])
    seen_extras = {extra}
    while todo:
        spec = todo.pop()
        name = canonical(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0])
        if name == PROJECT:
            inner = re.search(r"\[([^\]]*)\]", spec)
            for sub in (inner[1].split(",") if inner else []):
                sub = sub.strip()
                if sub not in seen_extras:
                    seen_extras.add(sub)
                    todo.extend(extras[sub])
        else:
            roots.add(name)
    return roots


def closure(entries: dict[str, Entry], roots: set[str]) -> set[str]:
    """Every locked package reachable from `roots` along the lock's "# via" edges (roots not in the lock,
    such as torch, still lead to what they pull in)."""
    children: dict[str, set[str]] = {}
    for entry in entries.values():
        for parent in entry.parents:
            children.setdefault(parent, set()).add(entry.name)
    found, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        todo.extend(children.get(name, ()))
    missing = roots - set(entries) - {"torch"}
    if missing:
        raise SystemExit(f"{LOCK}: {sorted(missing)} are required by pyproject.toml but not locked; run `make lock`")
    return found & set(entries)


HEADER = """\
# GENERATED from requirements/lock.txt by requirements/generate.py (`make lock`); do not edit.
"""


def render(lock_text: str, pyproject_text: str, torch_in_text: str) -> dict[str, str]:
    """File name -> the text it must have."""
    entries = read_lock(lock_text)
    project = tomllib.loads(pyproject_text)["project"]
    torch, version = torch_pin(torch_in_text)
    out = {}
    torch_deps = sorted(closure(entries, {torch}))
    out["torch.txt"] = HEADER + (
        "# torch (requirements/torch.in) and its own dependencies at the lock's versions, without hashes: the\n"
        "# CPU build (this machine's disk) and the CUDA build (the GPU image) are different files. Installed\n"
        "# first; the CUDA build adds its nvidia-* and triton packages, which it pins exactly itself.\n"
        f"torch=={version}\n" + "".join(f"{n}=={entries[n].version}\n" for n in torch_deps))
    for extra in IMAGE_EXTRAS:
        names = sorted(closure(entries, extra_roots(project, extra) | {torch}))
        out[f"{extra}.txt"] = HEADER + (
            f"# The GPU worker image's dependencies for EXTRAS={extra} (deploy/Dockerfile.gpu-worker): the base\n"
            f"# install plus the `{extra}` extra and torch's dependencies, each entry copied from the lock with\n"
            "# its hashes. Install with: pip install --require-hashes --no-deps -r THIS_FILE (torch.txt first).\n"
            + "".join("\n".join(entries[n].block) + "\n" for n in names))
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    files = render(LOCK.read_text(), (REPO / "pyproject.toml").read_text(), TORCH_IN.read_text())
    stale = []
    for name, text in files.items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(text)
    if stale:
        print(f"out of date with requirements/lock.txt: {', '.join(stale)}; run `python requirements/generate.py` "
              "(or `make lock`) and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
