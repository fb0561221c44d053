"""A config dataclass's fields as command-line options: the reading that cli.py's click options and
flows/__main__.py's argparse options share (a foundation: no click, no Prefect)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Literal, get_args, get_type_hints


def unwrap_optional(tp):
    """(T, True) for `T | None`, else (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def config_fields(cls, suffix: str = ""):
    """(option name, type, default, help) per field of the config dataclass `cls`; a nested dataclass's
    fields come flattened, their names suffixed with the field's singular (columns.text -> text_column)."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from config_fields(tp, suffix=f"_{f.name[:-1] if f.name.endswith('s') else f.name}")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        yield f.name + suffix, tp, default, f.metadata.get("help", "")


def argparse_options(parser, cls) -> None:
    """Add one argparse option per field of the flat dataclass `cls`, as dataclass_options adds click options
    (for a front door that is not a click command, `python -m allsides_batch.flows`): a list field takes one
    or more values, a flag defaulting to true gets --no-X too, a Literal its choices."""
    import argparse

    for name, tp, default, help_text in config_fields(cls):
        base, _ = unwrap_optional(tp)
        kwargs: dict = {"help": help_text, "default": default}
        if typing.get_origin(base) is list:
            kwargs["nargs"] = "+"
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        elif typing.get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
        else:
            kwargs["type"] = base
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)
