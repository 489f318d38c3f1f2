"""Settings from flags and environment, each declared once.

A command's settings are a frozen dataclass whose fields carry their option
in the field's metadata (``option(...)``): the flag, the environment
variable(s), the help text and the parser. Two generic functions do the
rest: ``add_options`` turns the fields into argparse options whose help shows
the environment variable and the default, and ``from_args`` builds the value
from the parsed flags and the environment, read once: a flag wins over the
environment, the environment over the default. An empty variable counts as
unset. A bad value in the environment is an error that names the variable.

    @dataclass(frozen=True, kw_only=True)
    class Settings:
        port: int = option(8080, flag="--port", env="APP_PORT", help="port")

    parser = argparse.ArgumentParser()
    add_options(parser, Settings)
    settings = from_args(Settings, parser.parse_args(), parser=parser)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Option",
    "SettingsError",
    "add_options",
    "from_args",
    "integer",
    "number",
    "option",
    "positive_int",
]

T = TypeVar("T")

_KEY = "eventflow.option"


class SettingsError(ValueError):
    """A setting's value from the environment could not be used."""


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {text}")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclass(frozen=True, kw_only=True)
class Option:
    """How one setting is given.

    Attributes:
        flag: the command-line flag; None for a setting that only the
            environment may give (a secret: a command line is visible to
            every local user).
        env: environment variables, the first one set wins; () for none.
        help: what the setting means (``add_options`` adds the variable and
            the default).
        parse: turns a flag's or a variable's text into the value.
        show: how a value appears in ``--help`` (``sinks.redact_url`` for a
            URL that may hold a password); its output is also all an error
            says about a bad value.
        shown_default: the default as ``--help`` says it, for defaults that
            are not a plain value ("HOSTNAME-PID").
        choices: the values a flag accepts (a variable is only parsed: the
            log level's variable has always taken any case).
        env_pick: what to take from a variable's text; None counts as unset
            (the consumer takes the first Redis URL of the workers' sink
            list).
        metavar: the flag's placeholder in ``--help``.
        many: the flag may be given several times and the variable holds a
            comma-separated list; the value is the tuple of the parsed items
            (the flags' when any is given, else the variable's).
    """

    flag: str | None
    env: tuple[str, ...]
    help: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] | None = None
    shown_default: str | None = None
    choices: Sequence[Any] | None = None
    env_pick: Callable[[str], str | None] | None = None
    metavar: str | None = None
    many: bool = False


def option(
    default: Any = dataclasses.MISSING,
    *,
    flag: str | None = None,
    env: str | Sequence[str] = (),
    help: str,
    parse: Callable[[str], Any] | None = None,
    default_factory: Callable[[], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    shown_default: str | None = None,
    choices: Sequence[Any] | None = None,
    env_pick: Callable[[str], str | None] | None = None,
    metavar: str | None = None,
    many: bool = False,
    repr: bool = True,
) -> Any:
    """A dataclass field that is also a command-line option.

    ``parse`` defaults to the default's type (``int``, ``float``, ``str``; a
    ``bool`` field is a switch; ``str`` for the items of a ``many`` option).
    Pass ``repr=False`` for secrets.
    """
    if parse is None:
        parse = str if many else _parser_for(default)
    metadata = {
        _KEY: Option(
            flag=flag,
            env=(env,) if isinstance(env, str) else tuple(env),
            help=help,
            parse=parse,
            show=show,
            shown_default=shown_default,
            choices=choices,
            env_pick=env_pick,
            metavar=metavar,
            many=many,
        )
    }
    if default_factory is not None:
        return dataclasses.field(
            default_factory=default_factory, metadata=metadata, repr=repr
        )
    return dataclasses.field(default=default, metadata=metadata, repr=repr)


def _parser_for(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _boolean
    if isinstance(default, int):
        return integer
    if isinstance(default, float):
        return number
    if isinstance(default, str):
        return str
    raise TypeError(f"option with default {default!r} needs parse=")


def _options(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [
        (f, f.metadata[_KEY]) for f in dataclasses.fields(cls) if _KEY in f.metadata
    ]


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help(f: dataclasses.Field[Any], opt: Option, environ: Mapping[str, str]) -> str:
    show = opt.show or str
    notes = []
    if opt.env:
        names = " or ".join(opt.env)
        now = _env_text(opt, environ)
        notes.append(
            f"env {names}" if now is None else f"env {names}, set to {show(now[1])}"
        )
    if opt.shown_default is not None:
        notes.append(f"default {opt.shown_default}")
    elif isinstance(_default_of(f), bool):
        pass  # a switch: off unless given
    elif (default := _default_of(f)) is None:
        notes.append("default none")
    elif default is not dataclasses.MISSING:
        notes.append(f"default {show(default)}")
    text = opt.help + (f" ({'; '.join(notes)})" if notes else "")
    return text.replace("%", "%%")  # argparse formats help with %


def add_options(
    parser: argparse._ActionsContainer,
    cls: type,
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Add an option to ``parser`` (or an argument group) for every field of
    the settings dataclass ``cls`` that has a flag.

    Options default to "not given" (``argparse.SUPPRESS``), so that
    ``from_args`` can tell a flag from the environment. The help of each
    shows its environment variable (and, when set, its value through
    ``show``) and its default.
    """
    environ = os.environ if environ is None else environ
    for f, opt in _options(cls):
        if opt.flag is None:
            continue
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": _help(f, opt, environ),
        }
        if isinstance(_default_of(f), bool):
            kwargs["action"] = "store_true"
        else:
            if opt.many:
                kwargs["action"] = "append"
            kwargs["type"] = _for_argparse(opt.parse)
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
            if opt.metavar is not None:
                kwargs["metavar"] = opt.metavar
        parser.add_argument(opt.flag, **kwargs)


def _for_argparse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse shows the message of an ArgumentTypeError only ("argument
    # --shards: expected a positive integer, got 0"); of a ValueError it says
    # just "invalid positive_int value".
    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_flag


def _env_text(opt: Option, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The first variable of ``opt`` that is set (and accepted), and its text."""
    for name in opt.env:
        text = environ.get(name)
        if not text:
            continue
        if opt.env_pick is not None and (text := opt.env_pick(text)) is None:
            continue
        return name, text
    return None


def from_args(
    cls: type[T],
    args: argparse.Namespace,
    *,
    parser: argparse.ArgumentParser | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """The settings ``cls`` from parsed flags, the environment and defaults,
    in that order of precedence.

    Raises:
        SettingsError: an environment variable holds a value its setting
            cannot take; with ``parser``, ``parser.error`` reports it instead
            (usage and exit status 2).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    try:
        for f, opt in _options(cls):
            if opt.flag is not None and hasattr(args, f.name):
                given = getattr(args, f.name)
                values[f.name] = tuple(given) if opt.many else given
                continue
            found = _env_text(opt, environ)
            if found is not None:
                values[f.name] = _parse_env(opt, *found)
        return cls(**values)
    except SettingsError as exc:
        if parser is None:
            raise
        parser.error(str(exc))


def _parse_env(opt: Option, name: str, text: str) -> Any:
    try:
        if opt.many:
            items = (item.strip() for item in text.split(","))
            return tuple(opt.parse(item) for item in items if item)
        value = opt.parse(text)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        # A value that may hold a secret is shown only as ``show`` shows it.
        reason = str(exc) if opt.show is None else f"cannot use {opt.show(text)}"
        raise SettingsError(f"environment variable {name}: {reason}") from None
    return value
