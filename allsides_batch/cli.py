"""CLI plumbing: a lazily-loading click group, options generated from the config dataclasses, the
error boundary (UserError → one line on stderr, exit code 2, no traceback) and the log handler."""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib
import logging
import os
import sys
import types
import typing
from typing import Literal, get_args, get_type_hints

import click

from .errors import UserError

log = logging.getLogger(__name__)


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `aggregate` never imports torch and
    `train` never imports polars or prefect."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            module, help_text = self.lazy_commands[name]
            try:
                return importlib.import_module(module).command
            except ModuleNotFoundError as exc:
                # A listing (--help) should not fail because one command's extra is missing.
                return click.Command(name, help=f"{help_text} [unavailable: {exc}]",
                                     callback=functools.partial(_missing, exc))
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, self.lazy_commands[name][1]) for name in sorted(self.lazy_commands)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing(exc: Exception) -> None:
    raise UserError(f"{exc}; install the package's dependencies (pip install allsides-batch)")


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def dataclass_options(cls, skip: tuple[str, ...] = (), required: tuple[str, ...] = (),
                      flags: dict[str, tuple[str, ...]] | None = None):
    """Decorator adding one click option per dataclass field (nested dataclasses flattened with
    their field name as suffix: Columns.text → --text-column)."""
    flags = flags or {}

    def decorate(func):
        for name, tp, default, help_text in reversed(list(_fields(cls))):
            if name in skip:
                continue
            opt = flags.get(name, ("--" + name.replace("_", "-"),))
            base, optional = _unwrap_optional(tp)
            kwargs: dict = {"help": help_text, "show_default": True}
            if typing.get_origin(base) is list:
                kwargs.update(multiple=True, required=name in required, show_default=False)
            elif base is bool:
                opt = (f"{opt[0]}/--no-{opt[0][2:]}",) if default else opt
                kwargs.update(is_flag=True, default=default)
            elif typing.get_origin(base) is Literal:
                kwargs.update(type=click.Choice(list(get_args(base))), default=default)
            else:
                kwargs.update(type=base, default=None if name in required else default, required=name in required,
                                  show_default=name not in required)
                if optional:
                    kwargs["show_default"] = False
            func = click.option(*opt, name, **kwargs)(func)
        return func
    return decorate


def _fields(cls, suffix: str = ""):
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _fields(tp, suffix=f"_{f.name[:-1] if f.name.endswith('s') else f.name}")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        yield f.name + suffix, tp, default, f.metadata.get("help", "")


def build_config(cls, values: dict):
    """Construct `cls` from flattened CLI values (inverse of dataclass_options)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            suffix = f"_{f.name[:-1] if f.name.endswith('s') else f.name}"
            kwargs[f.name] = tp(**{g.name: values[g.name + suffix] for g in dataclasses.fields(tp)
                                   if g.name + suffix in values})
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = list(value) if isinstance(value, tuple) else value
    config = cls(**kwargs)
    log.debug("%s", config)  # what the options resolved to
    return config


# Environment errors a user fixes outside the program: permissions, read-only or full storage.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def environment_error(exc: BaseException) -> str | None:
    """One-line message for an OSError of ENVIRONMENT_ERRNOS (also found as the cause of another error)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            where = f" {exc.filename!r}" if exc.filename else ""
            hint = {errno.ENOSPC: "free space or choose another --output",
                    errno.EDQUOT: "free space or raise the quota",
                    errno.EFBIG: "the file size limit was reached; raise it or choose another --output"}.get(
                        exc.errno, "check the permissions or choose another --output")
            return f"cannot write{where}: {exc.strerror or exc}; {hint}"
        exc = exc.__cause__ or exc.__context__
    return None


def run_command(func, *args, **kwargs):
    """Run a command body; a UserError, or a permission / read-only / full-storage error, becomes one line
    on stderr and exit code 2."""
    try:
        return func(*args, **kwargs)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (OSError, RuntimeError) as exc:
        message = environment_error(exc)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)


# ---- logging: the CLI is the one place that installs a handler; library modules only call getLogger

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
LOG_LEVEL_ENV = "ALLSIDES_BATCH_LOG_LEVEL"
PACKAGE_LOGGER = "allsides_batch"


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a record arrives (click's test runner swaps it)."""

    def __init__(self, level: int = logging.NOTSET):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


class ShortFormatter(logging.Formatter):
    """An info record is its message alone; other levels name their level and logger:
    `WARNING allsides_batch.commands.score: ...`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return record.message
        return f"{record.levelname} {record.name}: {record.message}"


def logging_options(func):
    """The top-level group's --log-level, -v/--verbose and -q/--quiet."""
    func = click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only (--log-level warning).")(func)
    func = click.option("-v", "--verbose", is_flag=True,
                        help="Debug records too, and the Hugging Face libraries' own messages and progress bars "
                             "(--log-level debug).")(func)
    return click.option("--log-level", type=click.Choice(list(LOG_LEVELS), case_sensitive=False), default="info",
                        envvar=LOG_LEVEL_ENV, show_envvar=True, show_default=True,
                        help="Least severe log record written to stderr; -v and -q take precedence.")(func)


def resolve_log_level(verbose: bool, quiet: bool, level: str) -> int:
    if verbose and quiet:
        raise click.UsageError("give at most one of -v/--verbose and -q/--quiet")
    return logging.DEBUG if verbose else logging.WARNING if quiet else LOG_LEVELS[level.lower()]


def configure_logging(level: int):
    """Write the package's log records at `level` and above to stderr, and let the level decide how much
    the Hugging Face libraries say (see _hugging_face_verbosity). Returns a function that undoes both."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(old)
    handler = StderrHandler()
    handler.setFormatter(ShortFormatter())
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    undo_hf = _hugging_face_verbosity(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        undo_hf()
    return restore


def _hugging_face_verbosity(level: int):
    """At debug, transformers logs at debug and the Hugging Face progress bars stay on; above it they
    report errors only, without bars (`train`'s "newly initialized classifier" report is expected, and
    `score` draws its own bar). Set through the environment, so modules imported later and the scorer's
    device processes follow, and directly for modules already imported. A variable the environment
    already sets (TRANSFORMERS_VERBOSITY, HF_HUB_DISABLE_PROGRESS_BARS) is left as it is."""
    debug = level <= logging.DEBUG
    wanted = {"TRANSFORMERS_VERBOSITY": "debug"} if debug else {"TRANSFORMERS_VERBOSITY": "error",
                                                                   "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    set_here = [name for name in wanted if name not in os.environ]
    os.environ.update({name: wanted[name] for name in set_here})

    def unset() -> None:
        for name in set_here:
            os.environ.pop(name, None)
    undo = [unset]
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if "TRANSFORMERS_VERBOSITY" in set_here:
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity(logging.DEBUG if debug else logging.ERROR)
            undo.append(lambda: hf_logging.set_verbosity(verbosity))
        if "HF_HUB_DISABLE_PROGRESS_BARS" in set_here and hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            undo.append(hf_logging.enable_progress_bar)
    elif "huggingface_hub" in sys.modules and "HF_HUB_DISABLE_PROGRESS_BARS" in set_here:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)

    def restore() -> None:
        for step in reversed(undo):
            step()
    return restore
