"""Problem lines: pydantic's errors (the config's and the plugins') as ``"option.path: what is wrong"``.

Every step of loading collects :class:`Problem` objects instead of stopping at the first; they are
sorted by the options' positions in the model (file-level lines first) and end up in one
:class:`~exporter.errors.ConfigError`. No line ever repeats a secret: the text is built here from
the option path and the error kind, and an input is quoted back only for durations, enumerations
and similar non-secret values.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from exporter.config.model import Config
from exporter.config.types import shown
from exporter.plugins import KINDS, SectionCheck

__all__ = ["Loc", "Problem", "describe", "plugin_problems", "sorted_lines", "validation_problems"]

#: an option path, as pydantic gives it: ``("export", "headers")``, ``("alarms", "ids", 2)``
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One problem at option path ``loc`` (``()``: the file as a whole)."""

    loc: Loc
    text: str

    def line(self) -> str:
        return f"{'.'.join(str(part) for part in self.loc)}: {self.text}" if self.loc else self.text


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", "≥"), "less_than": ("lt", "<")}
_BOUNDS["less_than_equal"] = ("le", "≤")
_KINDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "model_type": "must be a mapping of options",
    "model_attributes_type": "must be a mapping of options",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "iterable_type": "must be a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _section_model(loc: Loc, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model class found at option path ``loc`` (from ``root``, default the whole config), or
    ``None`` when ``loc`` is not a section."""
    model: type[BaseModel] = root or Config
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_option(loc: Loc, root: type[BaseModel] | None = None) -> str:
    model = _section_model(loc[:-1], root)
    names = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]).lower(), names, n=1, cutoff=0.6)
    if close:
        return f"unknown option (did you mean {close[0]!r}?)"
    return f"unknown option (valid: {', '.join(names)})" if names else "unknown option"


def _describe(err: Mapping[str, Any], loc: Loc, root: type[BaseModel] | None = None) -> str:
    """An operator's line for one pydantic error; quotes the input back only for enumerations."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return _unknown_option(loc, root)
    if kind == "literal_error":
        choices = ", ".join(repr(c) for c in re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        given = err.get("input")
        got = f" (got {shown(given)})" if isinstance(given, str) else ""
        return f"must be one of {choices}{got}"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"must be {sign} {_number(ctx.get(key))}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind in _KINDS:
        return _KINDS[kind]
    message = str(err["msg"])
    return message[:1].lower() + message[1:]


def describe(err: Mapping[str, Any], loc: Loc, root: type[BaseModel] | None = None) -> str:
    """:func:`_describe` for the loader (a destination's sink options, validated by its own model)."""
    return _describe(err, loc, root)


def validation_problems(exc: ValidationError, from_env: Mapping[Loc, str]) -> list[Problem]:
    """The lines for the config model's errors; ``from_env`` maps an option to the ``OTEL_*``
    variable its value came from (named in the line)."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        if err["type"] == "config_field":
            problems.append(Problem((*loc, err["ctx"]["field"]), str(err["ctx"]["message"])))
            continue
        text = _describe(err, loc)
        if loc and loc[-1] == "[key]":
            loc, text = loc[:-1], f"name {text}"
        variable = next((var for path, var in from_env.items() if loc[: len(path)] == path), None)
        problems.append(Problem(loc, f"{text} (from {variable})" if variable else text))
    return problems


def plugin_problems(check: SectionCheck) -> list[Problem]:
    """The lines for what :func:`exporter.plugins.check_section` found, at ``plugins.<kind>.…``."""
    problems: list[Problem] = []
    for kind in KINDS:
        if kind in check.unusable:
            problems.append(Problem(("plugins", kind, "name"), check.unusable[kind]))
        if kind in check.invalid:
            model, exc = check.invalid[kind]
            for err in exc.errors(include_url=False):
                loc: Loc = tuple(err["loc"])
                text = _describe(err, loc, model)
                if loc and loc[-1] == "[key]":
                    loc, text = loc[:-1], f"name {text}"
                problems.append(Problem(("plugins", kind, "options", *loc), text))
    return problems


def _rank(loc: Loc) -> list[int]:
    """Sort key: the options' positions in the model (file-level lines, without a path, first)."""
    rank: list[int] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        names = list(model.model_fields) if model is not None else []
        if part in names:
            rank.append(names.index(str(part)))
        else:
            rank.append(part if isinstance(part, int) else len(names))
        model = _section_model(loc[: len(rank)])
    return rank


def sorted_lines(problems: list[Problem]) -> list[str]:
    """The problems' lines in the model's order, each once."""
    ranked = sorted(problems, key=lambda problem: _rank(problem.loc))
    return list(dict.fromkeys(problem.line() for problem in ranked))
