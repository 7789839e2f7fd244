"""Plugins: sources, mappers and sinks found through Python entry points.

::

    entry point (group bk_otel_exporter.<kind>s, name = the name a config selects)
        └─> a Plugin object: kind, name, options model, create(options, context)
                └─> create() returns the Source / Mapper / Sink instance the pipeline uses

Groups: ``bk_otel_exporter.sources``, ``bk_otel_exporter.mappers``, ``bk_otel_exporter.sinks``.
The built-in BlueKing source, the default (docs/reference.md) and ECS mappers and the OTLP, console, jsonl and
memory sinks are registered in this project's own ``pyproject.toml`` exactly like third-party
plugins (when the project is run from a checkout that was never installed, so that no entry point
of ours is visible, the same table, :data:`BUILTINS`, is used instead).

What each kind must do is written in its Protocol: :class:`exporter.sources.base.Source`,
:class:`exporter.mapping.base.Mapper`, :class:`exporter.sinks.base.Sink`. ``docs/plugins.md`` is
the guide.

Options: the config's ``plugins.<kind>.options`` block is validated by the plugin's own pydantic
model (derive it from :class:`PluginOptions`: frozen, unknown keys forbidden), while the config is
loaded, so ``check-config`` reports ``plugins.sink.options.max_bytes: …`` like any other option.
:func:`check_section` does that for a raw ``plugins:`` section; :mod:`exporter.config` calls it
and turns what it finds into problem lines (this module never imports the config at run time).

Loading is lazy and cheap: only the selected plugins are imported, and the entry-point scan is
cached per ``sys.path``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import import_module
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from exporter.errors import PluginError

if TYPE_CHECKING:
    from exporter.config import Config

__all__ = [
    "BUILTINS",
    "DEFAULTS",
    "DISTRIBUTION",
    "GROUPS",
    "KINDS",
    "Installed",
    "NoOptions",
    "Plugin",
    "PluginContext",
    "PluginKind",
    "PluginOptions",
    "SectionCheck",
    "available",
    "check_section",
    "create_plugin",
    "installed_plugins",
    "load_plugin",
    "settings_from",
    "validate_options",
]

log = logging.getLogger(__name__)

PluginKind = Literal["source", "mapper", "sink"]
KINDS: tuple[PluginKind, ...] = ("source", "mapper", "sink")
GROUPS: dict[str, str] = {
    "source": "bk_otel_exporter.sources",
    "mapper": "bk_otel_exporter.mappers",
    "sink": "bk_otel_exporter.sinks",
}
#: this project's distribution name
DISTRIBUTION = "bk-otel-exporter"
#: the built-in plugins, as ``pyproject.toml`` registers them (a test keeps the two equal)
BUILTINS: dict[str, dict[str, str]] = {
    "source": {"bkmonitor": "exporter.sources.bkmonitor:plugin"},
    "mapper": {"default": "exporter.mapping.contract:plugin", "ecs": "exporter.mapping.ecs:plugin"},
    "sink": {
        "console": "exporter.sinks.builtin:console",
        "jsonl": "exporter.sinks.jsonl:plugin",
        "memory": "exporter.sinks.builtin:memory",
        "otlp": "exporter.sinks.builtin:otlp",
    },
}
#: the plugin each kind uses when the config does not name one
DEFAULTS: dict[PluginKind, str] = {"source": "bkmonitor", "mapper": "default", "sink": "otlp"}

T = TypeVar("T")
D = TypeVar("D")


class PluginOptions(BaseModel):
    """Base for a plugin's options model: frozen, unknown keys are errors, inputs never echoed."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class NoOptions(PluginOptions):
    """The options model of a plugin that takes none (an empty ``options:`` block)."""


@dataclass(frozen=True)
class PluginContext:
    """What ``create`` is given besides its options.

    ``config``       the whole validated :class:`~exporter.config.Config` (for a third-party
                     plugin that needs more than its own options; the built-ins get their section)
    ``metrics``      the daemon's metrics (an ``ApiObserver`` for a source's API calls), or ``None``
    ``instance_id``  the state store's stable id of this exporter instance
    ``clock``        seconds since the epoch; use it instead of ``time.time`` so tests can drive it
    """

    config: Config
    metrics: Any = None
    instance_id: str = "unknown"
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Plugin(Generic[T]):
    """What an entry point resolves to: a factory with a name, a kind and an options model.

    ``create(options, context)`` gets an instance of ``options`` (already validated) and a
    :class:`PluginContext`, and returns the Source, Mapper or Sink. It runs at start-up and on
    every reload; raising there is a start-up error (exit 1), or a refused reload.

    ``section`` (the built-ins): the name of the config section that is the plugin's options
    (``bkmonitor`` for the BlueKing source, ``export`` for the OTLP sink). ``create`` then gets that
    validated section model, and the ``plugins.<kind>.options`` block must be empty (``options``
    is :class:`NoOptions`).
    """

    kind: PluginKind
    name: str
    options: type[BaseModel]
    create: Callable[[Any, PluginContext], T]
    description: str = ""
    section: str | None = None


@dataclass(frozen=True)
class Installed:
    """One entry point of a plugin group, before it is loaded."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str
    _load: Callable[[], Any] = field(repr=False, compare=False)

    def load(self) -> Any:
        return self._load()


def _from_target(target: str) -> Callable[[], Any]:
    def load() -> Any:
        module, _, attr = target.partition(":")
        obj: Any = import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    return load


def _own_version() -> str | None:
    try:
        return distribution(DISTRIBUTION).version
    except PackageNotFoundError:
        return None


_cache: dict[tuple[str, ...], dict[str, list[Installed]]] = {}


def _scan() -> dict[str, list[Installed]]:
    key = tuple(sys.path)
    found = _cache.get(key)
    if found is not None:
        return found
    found = {kind: [] for kind in KINDS}
    ours = False
    for kind in KINDS:
        for ep in entry_points(group=GROUPS[kind]):
            dist = getattr(ep, "dist", None)
            name = dist.metadata["Name"] if dist is not None else "?"
            ours = ours or name == DISTRIBUTION
            found[kind].append(
                Installed(kind, ep.name, ep.value, name, dist.version if dist is not None else "?", ep.load)
            )
    if not ours and _own_version() is None:
        # A checkout run without being installed: our entry points are not visible.
        from exporter import __version__

        for group, table in BUILTINS.items():
            for name, target in table.items():
                found[group].append(Installed(group, name, target, DISTRIBUTION, __version__, _from_target(target)))
    for rows in found.values():
        rows.sort(key=lambda row: (row.name, row.distribution))
    _cache.clear()  # one sys.path at a time
    _cache[key] = found
    return found


def available(kind: str) -> list[Installed]:
    """The installed plugins of one kind, by name."""
    return list(_scan()[kind])


def _names(kind: str) -> str:
    names = sorted({row.name for row in available(kind)})
    return ", ".join(names) if names else "none"


def load_plugin(kind: str, name: str) -> Plugin[Any]:
    """The plugin of ``kind`` called ``name``. Raises :class:`PluginError` with what is installed."""
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(KINDS)})")
    rows = [row for row in available(kind) if row.name == name]
    if not rows:
        raise PluginError(f"unknown {kind} {name!r} (installed: {_names(kind)})")
    if len({row.distribution for row in rows}) > 1:
        dists = ", ".join(sorted({row.distribution for row in rows}))
        raise PluginError(f"{kind} {name!r} is provided by several distributions ({dists}); uninstall all but one")
    row = rows[0]
    try:
        obj = row.load()
    except Exception as exc:
        log.debug("loading %s %s (%s) failed", kind, name, row.target, exc_info=True)
        raise PluginError(
            f"{kind} {name!r} ({row.target}, from {row.distribution} {row.version}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, Plugin):
        raise PluginError(
            f"{kind} {name!r}: entry point {row.target} is a {type(obj).__name__}, not an exporter.plugins.Plugin "
            "(a stale install? reinstall the distribution that provides it)"
        )
    if obj.kind != kind:
        raise PluginError(f"{kind} {name!r}: entry point {row.target} is a {obj.kind} plugin, not a {kind}")
    if not (isinstance(obj.options, type) and issubclass(obj.options, BaseModel)):
        raise PluginError(f"{kind} {name!r}: its options must be a pydantic model class")
    if obj.options.model_config.get("extra") != "forbid":
        raise PluginError(f"{kind} {name!r}: its options model must forbid unknown keys (derive from PluginOptions)")
    return obj


def validate_options(plugin: Plugin[Any], raw: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    """``raw`` validated by the plugin's model (an instance of it is returned as it is).

    Raises :class:`pydantic.ValidationError`; :mod:`exporter.config` turns it into option paths.
    """
    if isinstance(raw, plugin.options):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    return plugin.options.model_validate(dict(raw or {}))


@dataclass
class SectionCheck:
    """What :func:`check_section` found in a raw ``plugins:`` section, by kind."""

    #: the validated options (an instance of the plugin's options model)
    options: dict[PluginKind, BaseModel] = field(default_factory=dict)
    #: why the selected plugin cannot be used (the message of its :class:`PluginError`)
    unusable: dict[PluginKind, str] = field(default_factory=dict)
    #: the plugin's options model and what it rejected in the given options
    invalid: dict[PluginKind, tuple[type[BaseModel], ValidationError]] = field(default_factory=dict)


def check_section(section: object) -> SectionCheck:
    """Loads the plugins a raw ``plugins:`` section selects (:data:`DEFAULTS` where it names none)
    and validates their options.

    What cannot be checked here (a section, a kind's entry, a name or an options block of the
    wrong type) is skipped: the config's own validation reports it.
    """
    check = SectionCheck()
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        return check
    for kind in KINDS:
        ref = section.get(kind)
        ref = {} if ref is None else ref
        if not isinstance(ref, Mapping):
            continue
        name = DEFAULTS[kind] if ref.get("name") is None else ref.get("name")
        options = ref.get("options")
        if not isinstance(name, str) or not name or not (options is None or isinstance(options, Mapping)):
            continue
        try:
            plugin = load_plugin(kind, name)
        except PluginError as exc:
            check.unusable[kind] = str(exc)
            continue
        try:
            check.options[kind] = validate_options(plugin, options)
        except ValidationError as exc:
            check.invalid[kind] = (plugin.options, exc)
    return check


def create_plugin(kind: str, name: str, options: Mapping[str, Any] | BaseModel | None, context: PluginContext) -> Any:
    """Load the plugin, validate ``options`` (unless already its model's instance), create the instance.

    Raises :class:`PluginError` for every failure, naming the plugin (a failure of ``create`` is
    chained as the cause).
    """
    plugin = load_plugin(kind, name)
    try:
        validated = validate_options(plugin, options)
        if plugin.section is not None:  # a built-in: its options are its config section
            validated = getattr(context.config, plugin.section)
    except ValidationError as exc:
        problems = "; ".join(
            f"plugins.{kind}.options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise PluginError(f"{kind} {name!r}: invalid options: {problems}") from None
    try:
        return plugin.create(validated, context)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{kind} {name!r} cannot be created: {type(exc).__name__}: {exc}") from exc


def settings_from(cls: type[D], section: BaseModel, **overrides: Any) -> D:
    """A runtime settings dataclass ``cls`` from a validated section model: each field of ``cls``
    that the section has, secrets unwrapped, then ``overrides`` (for fields named differently)."""
    values: dict[str, Any] = {}
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name in type(section).model_fields:
            value = getattr(section, item.name)
            values[item.name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    values.update(overrides)
    return cls(**values)


def installed_plugins(*, check: bool = False) -> list[dict[str, Any]]:
    """One row per installed plugin: kind, name, target, distribution, version (and, with
    ``check``, ``status``: ``ok`` or why it cannot be used, and its ``description``)."""
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        for row in available(kind):
            item: dict[str, Any] = {
                "kind": kind,
                "name": row.name,
                "target": row.target,
                "distribution": row.distribution,
                "version": row.version,
            }
            if check:
                try:
                    plugin = load_plugin(kind, row.name)
                except PluginError as exc:
                    item.update(status=str(exc), description="")
                else:
                    item.update(status="ok", description=plugin.description)
            rows.append(item)
    return rows
