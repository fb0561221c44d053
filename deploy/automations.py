#!/usr/bin/env python
"""Create or update the automations of deploy/automations.yaml on the Prefect server, and the webhook
block the failure notification sends through. Idempotent: safe to rerun (automations are matched by
name and updated in place; the block is overwritten only when a URL is given).

    python deploy/automations.py                        # after deploy/pool.sh, once per server
    ALLSIDES_NOTIFY_URL=https://hooks.slack.com/services/... python deploy/automations.py
    python deploy/automations.py --check                # parse and validate the file only: no server
    python deploy/automations.py --render > a.json      # as `prefect automation create --from-file` takes it

Needs PREFECT_API_URL (the server); nothing here reaches the internet.

Environment:
  ALLSIDES_NOTIFY_URL       where a failed night is POSTed, as JSON {"text": "<subject>\\n<body>"} (the
                            shape Slack and Mattermost incoming webhooks take). Kept as a secret of the
                            custom-webhook block `allsides-night-failed`. Unset: an existing block keeps
                            its URL; a new one gets a placeholder that goes nowhere, and a warning says so.
  ALLSIDES_ZOMBIE_AFTER_S   seconds without a heartbeat after which a Running flow run is marked Crashed
                            (default: the file's `within`, 300). Keep it well above the workers'
                            PREFECT_FLOWS_HEARTBEAT_FREQUENCY (deploy/worker.sh: 60; Prefect's default 180).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "automations.yaml"
ZOMBIE = "allsides-crash-zombie-flow-runs"
NOTIFY_BLOCK = ("custom-webhook", "allsides-night-failed")
NOTIFY_URL_ENV = "ALLSIDES_NOTIFY_URL"
ZOMBIE_AFTER_ENV = "ALLSIDES_ZOMBIE_AFTER_S"
PLACEHOLDER_URL = "http://notify-url-not-set.invalid/set-ALLSIDES_NOTIFY_URL"
BLOCK_REF = re.compile(r"^\{\{\s*block:\s*([a-z0-9-]+)/([A-Za-z0-9_.-]+)\s*\}\}$")


class SetupError(Exception):
    """Something the operator fixes: the message says what."""


def load(path: Path = DEFAULT_FILE) -> list[dict]:
    """The automations in `path` (a list under `automations:`, as the Prefect CLI reads it)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("automations"), list) or not data["automations"]:
        raise SetupError(f"{path}: expected a non-empty list under `automations:`")
    names = [a.get("name") for a in data["automations"]]
    if len(set(names)) != len(names) or None in names:
        raise SetupError(f"{path}: every automation needs a name of its own, got {names}")
    return data["automations"]


def block_refs(obj) -> set[tuple[str, str]]:
    """Every `{{ block: <type>/<name> }}` placeholder in obj, as (block type slug, block name)."""
    if isinstance(obj, dict):
        return set().union(*(block_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(block_refs(v) for v in obj)) if obj else set()
    if isinstance(obj, str) and (m := BLOCK_REF.match(obj.strip())):
        return {(m.group(1), m.group(2))}
    return set()


def render(obj, block_ids: dict[tuple[str, str], str]):
    """obj with every block placeholder replaced by that block document's id."""
    if isinstance(obj, dict):
        return {k: render(v, block_ids) for k, v in obj.items()}
    if isinstance(obj, list):
        return [render(v, block_ids) for v in obj]
    if isinstance(obj, str) and (m := BLOCK_REF.match(obj.strip())):
        return str(block_ids[(m.group(1), m.group(2))])
    return obj


def with_zombie_after(automations: list[dict], seconds: float | None) -> list[dict]:
    """The zombie trigger's `within` set to `seconds` (None: as in the file)."""
    if seconds is None:
        return automations
    if seconds < 10:
        raise SetupError(f"{ZOMBIE_AFTER_ENV}={seconds}: a proactive trigger needs at least 10 s "
                         "(and it should be well above the heartbeat interval)")
    out = []
    for a in automations:
        if a["name"] == ZOMBIE:
            a = {**a, "trigger": {**a["trigger"], "within": seconds}}
        out.append(a)
    return out


def validate(automations: list[dict]):
    """Each automation as Prefect's AutomationCore, validated the way `prefect automation create` does."""
    from prefect.events.schemas.automations import AutomationCore

    out = []
    for a in automations:
        try:
            out.append(AutomationCore.model_validate(a))
        except Exception as exc:  # pydantic's ValidationError, with every field that is wrong
            raise SetupError(f"automation {a.get('name')!r} is not valid: {exc}") from exc
    return out


def check(path: Path = DEFAULT_FILE, zombie_after_s: float | None = None) -> list:
    """Parse and validate offline: placeholders get stand-in ids."""
    automations = with_zombie_after(load(path), zombie_after_s)
    ids = {ref: uuid.uuid5(uuid.NAMESPACE_URL, "/".join(ref)) for ref in block_refs(automations)}
    return validate(render(automations, ids))


# ------------------------------------------------------------------------------------------ the server

def _require_server() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise SetupError("PREFECT_API_URL is not set: point it at the server "
                         "(export PREFECT_API_URL=http://prefect-host:4200/api)")
    return url


def ensure_notify_block(url: str | None) -> tuple[uuid.UUID, str]:
    """The custom-webhook block `allsides-night-failed`: saved with `url` when given, else kept as it is
    (or created with a placeholder URL). Returns its id and what was done."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug, name = NOTIFY_BLOCK
    if not url:
        with get_client(sync_client=True) as client:
            try:
                doc = client.read_block_document_by_name(name, block_type_slug=slug)
                return doc.id, "kept (ALLSIDES_NOTIFY_URL not set)"
            except ObjectNotFound:
                pass
    block = CustomWebhookNotificationBlock(
        name=name,
        url="{{url}}",  # from the secrets, so the URL (often a token) is stored and shown as a secret
        method="POST",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets={"url": url or PLACEHOLDER_URL},
        timeout=10,
    )
    block_id = block.save(name, overwrite=True)
    return block_id, ("saved with ALLSIDES_NOTIFY_URL" if url else
                      f"created with a placeholder URL that goes nowhere: set {NOTIFY_URL_ENV} and rerun")


def block_ids(refs: set[tuple[str, str]], notify_url: str | None) -> tuple[dict, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    ids, notes = {}, []
    for ref in sorted(refs):
        if ref == NOTIFY_BLOCK:
            ids[ref], note = ensure_notify_block(notify_url)
            notes.append(f"block {ref[0]}/{ref[1]}: {note}")
            continue
        with get_client(sync_client=True) as client:
            try:
                ids[ref] = client.read_block_document_by_name(ref[1], block_type_slug=ref[0]).id
            except ObjectNotFound:
                raise SetupError(
                    f"block {ref[0]}/{ref[1]} (used in the automations) does not exist on the "
                    "server: create it first (UI: Blocks, or Python: <BlockClass>(...).save(name))"
                ) from None
    return ids, notes


def upsert(automations) -> list[str]:
    """Create each automation, or update the one of the same name in place. Extra copies of a name
    (e.g. made by hand with `prefect automation create`) are deleted: each would act once more."""
    from prefect.client.orchestration import get_client

    done = []
    with get_client(sync_client=True) as client:
        for a in automations:
            existing = client.read_automations_by_name(a.name)
            if not existing:
                done.append(f"created automation {a.name} ({client.create_automation(a)})")
                continue
            keep, *extra = sorted(existing, key=lambda e: str(e.id))
            client.update_automation(keep.id, a)
            for e in extra:
                client.delete_automation(e.id)
            done.append(f"updated automation {a.name} ({keep.id})"
                        + (f"; deleted {len(extra)} duplicate(s)" if extra else ""))
    return done


def apply(path: Path = DEFAULT_FILE, notify_url: str | None = None, zombie_after_s: float | None = None,
          render_only: bool = False) -> list[str]:
    automations = with_zombie_after(load(path), zombie_after_s)
    check(path, zombie_after_s)  # a wrong file fails before anything on the server changes
    _require_server()
    ids, notes = block_ids(block_refs(automations), notify_url)
    rendered = render(automations, ids)
    if render_only:
        return [json.dumps({"automations": rendered}, indent=2, default=str)]
    return notes + upsert(validate(rendered))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="automations file (default: %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate the file only; no server needed")
    mode.add_argument("--render", action="store_true",
                      help="print the automations with block ids filled in (creates the notify block if missing)")
    args = parser.parse_args(argv)
    zombie_after = os.environ.get(ZOMBIE_AFTER_ENV)
    try:
        zombie_after_s = float(zombie_after) if zombie_after else None
    except ValueError:
        print(f"error: {ZOMBIE_AFTER_ENV}={zombie_after!r} is not a number of seconds", file=sys.stderr)
        return 2
    try:
        if args.check:
            for a in check(args.file, zombie_after_s):
                print(f"ok: {a.name}")
            return 0
        for line in apply(args.file, os.environ.get(NOTIFY_URL_ENV) or None, zombie_after_s, args.render):
            print(line)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
