"""Command-line options generated from the option dataclasses, so each option is declared once.

An option dataclass (``FinetuneOptions``, ``RetargetOptions``, ``EvalOptions``...) declares each option's name,
type, default and help text in one place: ``frames_per_clip: int = option(8, "target frames per clip",
type=AT_LEAST_1)``. :func:`add_options` turns its fields into argparse arguments (``--frames-per-clip``; ``--no-progress``
for a bool that is on by default; the choices of a ``Literal`` or ``choices=``; a comma list for a tuple; the
default appended to the help), and :func:`from_args` builds the dataclass back from the parsed namespace. The
Python entry points take the same dataclasses, so the CLI and the API share one default and one check.

Why a ~150-line argparse generator and not tyro or jsonargparse: the CLI keeps its flag names, its one-line
errors (``_Parser``) and its instant ``--help`` (no extra import), subcommands mix generated and hand-written
arguments (paths, mutually exclusive sources), and the package gains no dependency.
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable, Literal, Sequence

from reenact import validate

__all__ = ["option", "add_options", "from_args", "cli_fields", "flag_of", "OutputOptions", "AT_LEAST_1",
           "NON_NEGATIVE", "NON_NEGATIVE_FLOAT", "POSITIVE_FLOAT", "UNIT", "CRF", "FPS", "RATE", "PORT", "DEVICE"]


def _checked(convert, check, *limits):
    """An argparse type: ``convert`` the text, then ``check(value, *limits, name)`` (``reenact.validate``), so
    the command line refuses a bad value by the same rule as the Python API, before any work starts."""
    def parse(text: str):
        from reenact.errors import InputError

        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            check(value, *limits, name="value")
        except InputError as e:
            raise argparse.ArgumentTypeError(e.problem) from None
        return value

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


AT_LEAST_1 = _checked(int, validate.at_least, 1)
NON_NEGATIVE = _checked(int, validate.at_least, 0)
NON_NEGATIVE_FLOAT = _checked(float, validate.at_least, 0)
POSITIVE_FLOAT = _checked(float, validate.positive)
UNIT = _checked(float, validate.between, 0, 1)  # a fraction or probability, 0 to 1
CRF = _checked(int, validate.crf)
FPS = _checked(float, validate.fps)
RATE = _checked(int, validate.between, *validate.SPEECH_RATE)
PORT = _checked(int, validate.between, 0, 65535)
DEVICE = _checked(str, validate.device)


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           type: Callable[[str], Any] | None = None, choices: Sequence | None = None, metavar: str | None = None,
           show_default: bool = True, cli: bool = True, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its command-line form in ``metadata``.

    help: the help text (for a bool that is on by default: what its ``--no-NAME`` flag does); the default is
    appended unless ``show_default=False`` or it is None. flag: the option string (default ``--field-name``,
    ``--no-field-name`` for a bool defaulting to True). type: argparse type (default: the annotation's int,
    float or str; for a tuple, the type of one item of the comma list). choices: allowed values (default: a
    ``Literal`` annotation's). cli: False keeps the field off the command line.
    """
    md = {"help": help, "flag": flag, "type": type, "choices": choices, "metavar": metavar,
          "show_default": show_default, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=md)


def cli_fields(cls, only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` on the command line (``only`` those, less ``exclude``), in declaration order."""
    only = None if only is None else set(only)
    unknown = (only or set()) | set(exclude)
    unknown -= {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)
            and (only is None or f.name in only) and f.name not in set(exclude)]


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def flag_of(f: dataclasses.Field) -> str:
    """The option string of field ``f``: ``metadata['flag']``, else ``--name`` (``--no-name`` for a bool that is
    on by default)."""
    name = f.name.replace("_", "-")
    return f.metadata.get("flag") or (f"--no-{name}" if _default(f) is True else f"--{name}")


def _unwrap(hint) -> tuple[Any, tuple]:
    """``(base, item types)``: ``int | None`` -> ``(int, ())``, ``tuple[int, ...]`` -> ``(tuple, (int,))``,
    ``str | os.PathLike`` -> ``(str, ())``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = next((a for a in args if a in (str, int, float, bool)), args[0])
        origin = typing.get_origin(hint)
    if origin in (tuple, list, collections.abc.Sequence):
        items = tuple(a for a in typing.get_args(hint) if a is not Ellipsis) or (str,)
        return tuple, items
    return hint, ()


def _comma_list(item: Callable[[str], Any]):
    def parse(text: str) -> tuple:
        try:
            return tuple(item(t.strip()) for t in text.split(",") if t.strip())
        except ValueError:
            kind = {int: "integers", float: "numbers"}.get(item, "values")
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind}, got {text!r}") from None

    parse.__name__ = "comma list"
    return parse


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(_show, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser, cls, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                help: dict[str, str] | None = None) -> None:
    """One argument per command-line field of dataclass ``cls`` on ``parser`` (an ``ArgumentParser`` or an
    argument group), ``dest`` the field name and default the dataclass's; ``help`` replaces a field's help text
    for this parser."""
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls, only, exclude):
        md, default = f.metadata, _default(f)
        text = (help or {}).get(f.name, md.get("help", ""))
        base, items = _unwrap(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": default}
        if base is bool:
            kw["action"] = "store_false" if default is True else "store_true"
        else:
            kind = md.get("type")
            if typing.get_origin(base) is Literal:
                kw["choices"] = typing.get_args(base)
                kind = kind or type(kw["choices"][0])
            if md.get("choices"):
                kw["choices"] = md["choices"]
            if items:
                kind = kind or _comma_list(items[0] if items[0] in (int, float) else str)
            kw["type"] = kind or (base if base in (int, float) else str)
            if md.get("metavar") or "choices" not in kw:
                kw["metavar"] = md.get("metavar") or flag_of(f).lstrip("-").replace("-", "_").upper()
            if md.get("show_default", True) and default is not None and default not in ("", ()):
                text = f"{text} (default {_show(default)})"
        parser.add_argument(flag_of(f), help=text, **kw)


def from_args(cls, ns: argparse.Namespace, **overrides):
    """``cls`` from the parsed namespace: every init field found there (by name), then ``overrides``."""
    kw = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)}
    kw.update(overrides)
    return cls(**kw)


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Options of the commands that write a video (render, animate, puppeteer, live, speak, lipsync)."""

    crf: int = option(18, "H.264 quality, 0 (lossless) to 51; lower is better and bigger", type=CRF)
    progress: bool = option(True, "no progress bars")
    watermark: bool = option(True, "do not embed the invisible watermark (the file's provenance record says it "
                                   "was turned off)")
