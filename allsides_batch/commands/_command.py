"""The click Command every subcommand uses: help lists required options first, shows float defaults
rounded (0.333, not 0.3333333333333333) and no default for an empty one (`--model`), says that a
list option is repeated for several values, and an extra value after one (`--input a b`) gets that
hint in its error."""

from __future__ import annotations

import json
import math

import click

REPEAT_HINT = "repeat the option for several"


def _default_text(value: object) -> str | None:
    """How a default is shown: None hides it (an empty string, which only means 'not given')."""
    if value == "":
        return None
    if isinstance(value, float):
        return f"{value:.3g}" if len(repr(value)) > 8 else repr(value)
    return None if value is None else str(value)


def help_record(param: click.Parameter, ctx: click.Context) -> tuple[str, str] | None:
    """click's Option.get_help_record with the default shown as _default_text and list options'
    help ending in REPEAT_HINT."""
    if not isinstance(param, click.Option) or param.hidden:
        return None
    help_text = param.help or ""
    if param.multiple and REPEAT_HINT not in help_text:
        name = param.opts[0]
        help_text = f"{help_text} ({REPEAT_HINT}: {name} A {name} B)".strip()
    extra = param.get_help_extra(ctx)
    if "default" in extra and not isinstance(param.default, bool) and isinstance(param.default, (str, float)):
        shown = _default_text(param.default)
        if shown is None:
            extra.pop("default")
        else:
            extra["default"] = shown
    items = []
    if "envvars" in extra:
        items.append(f"env var: {', '.join(extra['envvars'])}")
    if "default" in extra:
        items.append(f"default: {extra['default']}")
    if "range" in extra:
        items.append(extra["range"])
    if "required" in extra:
        items.append(extra["required"])
    if items:
        help_text = f"{help_text}  [{'; '.join(items)}]" if help_text else f"[{'; '.join(items)}]"
    return param.get_help_spec(ctx), help_text


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def echo_result(result: dict) -> None:
    """The command's one result on stdout: a JSON object on one line (NaN and infinities as null)."""
    click.echo(json.dumps(_finite(result), default=str))


def markdown_option(what: str):
    """--markdown: also print the human-readable markdown report (`what`) on stderr."""
    return click.option("--markdown", is_flag=True, default=False,
                        help=f"also print {what} as markdown on stderr (stdout holds the JSON result; "
                             "--output writes the markdown file either way)")


class Command(click.Command):
    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        params = sorted(self.get_params(ctx), key=lambda p: not p.required)  # stable: required first
        rows = [rv for rv in (help_record(p, ctx) for p in params) if rv is not None]
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            lists = [p.opts[0] for p in self.params if isinstance(p, click.Option) and p.multiple]
            if "unexpected extra argument" in exc.message and lists:
                exc.message += (f"; an option takes one value: {REPEAT_HINT} "
                                f"({lists[0]} A {lists[0]} B; list options: {', '.join(lists)})")
            raise


def echo_markdown(text: str) -> None:
    """Markdown the user asked for with --markdown: on stderr, so stdout stays one JSON object."""
    click.echo(text, nl=not text.endswith("\n"), err=True)
