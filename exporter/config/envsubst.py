"""``${VAR}`` substitution in the config text, and the YAML loader that knows where it substituted.

::

    text ──substitute──> text' (+ where values went, + markers for unset variables) ──parse_yaml──> tree

* ``${VAR}`` / ``${VAR:-default}`` (the default when VAR is unset or empty) are replaced in the
  text before parsing; the OpenTelemetry Collector's spelling ``${env:VAR}`` (and
  ``${env:VAR:-default}``) means the same; ``$$`` is a literal ``$``; substituted values are not
  scanned again and defaults cannot contain ``}``;
* a reference that makes up a whole plain scalar stays a string, so a secret of digits (or
  ``yes``, ``0x1f`` …) arrives verbatim;
* a reference to an unset variable becomes a unique marker: the loader reports it at the option
  it lands in, and ignores it inside a YAML comment;
* YAML's own messages quote the offending text, which may come from a secret: the lines built
  here keep only the position, and the problem only outside substituted values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter.errors import ConfigError

__all__ = ["Substituted", "parse_yaml", "substitute", "substitute_env"]

# ── ${VAR} substitution ──────────────────────────────────────────────────────────────────────

_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\})")
_REFERENCE_BODY = re.compile(r"(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_UNSET_MARKER = "__bk_otel_exporter_unset_{}__"


@dataclass
class Substituted:
    """The substituted text, and what :func:`parse_yaml` and the loader need to know about it."""

    text: str
    #: ``(start, end)`` in ``text`` of every non-empty substituted value
    spans: set[tuple[int, int]] = field(default_factory=set)
    #: marker left in ``text`` -> (variable, line), for every reference to an unset variable
    unset: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: malformed references
    problems: list[str] = field(default_factory=list)


def substitute(text: str, env: Mapping[str, str]) -> Substituted:
    """Substitutes references; each one to an unset variable becomes a unique marker."""
    out: list[str] = []
    result = Substituted("")
    length = pos = 0
    for ref in _REFERENCE.finditer(text):
        out.append(text[pos : ref.start()])
        length += ref.start() - pos
        pos = ref.end()
        line = text.count("\n", 0, ref.start()) + 1
        if ref[1]:
            value = "$"
        elif (body := _REFERENCE_BODY.fullmatch(ref[2])) is None:
            result.problems.append(
                f"config line {line}: invalid reference {ref[0]!r} (use ${{VAR}}, ${{env:VAR}} or ${{VAR:-default}})"
            )
            value = ref[0]
        else:
            name, default = body[1], body[2]
            found = env.get(name)
            chosen = default if default is not None and not found else found
            if chosen is None:
                value = _UNSET_MARKER.format(len(result.unset))
                result.unset[value] = (name, line)
            else:
                value = chosen
                if value:
                    result.spans.add((length, length + len(value)))
        out.append(value)
        length += len(value)
    out.append(text[pos:])
    result.text = "".join(out)
    return result


def substitute_env(text: str, env: Mapping[str, str]) -> str:
    """Replaces ``${VAR}``, ``${env:VAR}`` and ``${VAR:-default}`` (default when VAR is unset or
    empty); ``$$`` is ``$``.

    Raises :class:`ConfigError` naming every unset variable (and every malformed reference) at
    once. Substituted values are not scanned again; defaults cannot contain ``}``.
    """
    result = substitute(text, env)
    lines: dict[str, list[int]] = {}
    for name, line in result.unset.values():
        lines.setdefault(name, []).append(line)
    problems = result.problems + [
        f"config line {', '.join(map(str, numbers))}: environment variable {name} is not set "
        f"(set it, or give a default: ${{{name}:-default}})"
        for name, numbers in lines.items()
    ]
    if problems:
        raise ConfigError(problems)
    return result.text


# ── YAML ─────────────────────────────────────────────────────────────────────────────────────

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_NULL = re.compile(r"~|null|Null|NULL")


_CUT_BY_COMMENT = re.compile(r"[ \t]+#")
_QUOTE_HINT = "quote the ${…} reference"


class _YamlLoader(yaml.SafeLoader):
    """``SafeLoader`` aware of substituted values: keeps whole ones as strings, reports duplicate keys.

    ``substituted`` maps the start of every substituted value in the text to its end.
    """

    def __init__(self, text: str, substituted: Mapping[int, int]) -> None:
        self.text = text
        self.substituted = substituted
        self.problems: list[str] = []
        super().__init__(text)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        event = self.peek_event()
        start, end = event.start_mark.index, event.end_mark.index
        value_end = self.substituted.get(start)
        if event.tag is None and event.style is None and value_end is not None:
            if end == value_end and not _YAML_NULL.fullmatch(event.value):
                self.get_event()
                node = yaml.ScalarNode(_STR_TAG, event.value, event.start_mark, event.end_mark)
                if anchor is not None:
                    self.anchors[anchor] = node
                return node
            if end < value_end and _CUT_BY_COMMENT.match(self.text, end, value_end):
                self.problems.append(
                    f"config line {event.start_mark.line + 1}: a value taken from the environment contains "
                    f"' #', which YAML reads as the start of a comment ({_QUOTE_HINT})"
                )
        return super().compose_scalar_node(anchor)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    self.problems.append(
                        f"config line {key_node.start_mark.line + 1}: duplicate key {key_node.value!r}"
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(sub: Substituted) -> tuple[Any, list[str]]:
    """The document and its non-fatal problems; raises :class:`ConfigError` on a syntax error.

    PyYAML's own messages quote the offending text, which may come from a secret: the lines
    built here keep only the position, and the problem only outside substituted values.
    """
    substituted = dict(sub.spans)
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(sub.text, substituted)
        return loader.get_single_data(), loader.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"config line {mark.line + 1}, column {mark.column + 1}" if mark else "config"
        if mark is not None and any(start <= mark.index <= end for start, end in sub.spans):
            detail = f"YAML syntax error inside a value taken from the environment ({_QUOTE_HINT})"
        else:
            detail = f"YAML syntax error: {exc.problem or exc.context}"
        problem = f"{where}: {detail}"
    except yaml.reader.ReaderError as exc:
        line = sub.text.count("\n", 0, exc.position) + 1
        problem = f"config line {line}: a control character that YAML does not allow"
    except yaml.YAMLError as exc:
        problem = f"config: not valid YAML ({type(exc).__name__})"
    finally:
        if loader is not None:
            loader.dispose()
    lines = [f"config line {line}: environment variable {name} is not set" for name, line in sub.unset.values()]
    raise ConfigError([problem, *sub.problems, *lines])
