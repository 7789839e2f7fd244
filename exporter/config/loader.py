"""Loading: the file (or a parsed mapping) to a validated :class:`~exporter.config.model.Config`.

::

    file ──read──> text ──${VAR} substitution──> YAML ──safe_load──> mapping
         ──OTEL_* fallbacks──> pydantic validation (+ the plugins' own options models)
         ──app_secret resolution──> Config

Every step collects its problems (:mod:`exporter.config.problems`); all of them end up in one
:class:`~exporter.errors.ConfigError`.

* the standard ``OTEL_*`` environment variables fill the ``export`` options the file leaves out
  (or sets to ``null``); ``OTEL_RESOURCE_ATTRIBUTES`` is merged under
  ``export.resource_attributes`` (the file wins). A problem with one names the variable.
  ``service.name`` there names the service when neither ``export.service_name`` nor
  ``OTEL_SERVICE_NAME`` does;
* ``bkmonitor.app_secret`` or ``bkmonitor.app_secret_file`` (not both); a relative file resolves
  against ``$CREDENTIALS_DIRECTORY`` first (where systemd's ``LoadCredential=`` puts credentials),
  else against the config file's directory; with neither option, the credential
  ``$CREDENTIALS_DIRECTORY/bk_app_secret`` is used when it exists;
* ``plugins.<source|mapper|sink>`` selects an installed plugin by ``name`` (an unknown name is
  reported with the installed ones); its ``options`` are validated by the plugin's own model
  (:func:`exporter.plugins.check_section`, which imports the selected plugins' modules) and
  reported under ``plugins.<kind>.options.<option>``. A validated config holds the plugin's
  options model instance in ``options``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import SecretStr, ValidationError

from exporter.config.envsubst import parse_yaml, substitute
from exporter.config.fields import empty_to_none
from exporter.config.model import Config
from exporter.config.problems import Loc, Problem, plugin_problems, sorted_lines, validation_problems
from exporter.config.types import shown
from exporter.errors import ConfigError
from exporter.plugins import check_section

__all__ = ["CONFIG_ENV", "CREDENTIAL_NAME", "DEFAULT_CONFIG_PATH", "config_from_dict", "load_config"]

CONFIG_ENV = "BK_OTEL_EXPORTER_CONFIG"
DEFAULT_CONFIG_PATH = "/etc/bk-otel-exporter/config.yaml"
#: the file systemd's ``LoadCredential=bk_app_secret:…`` creates in ``$CREDENTIALS_DIRECTORY``
CREDENTIAL_NAME = "bk_app_secret"


# ── OTEL_* environment fallbacks ─────────────────────────────────────────────────────────────


def _pairs(text: str, variable: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded keys and values (the OTel format). Never quotes a value back."""
    pairs: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: entry {number} is not key=value")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _millis(text: str, variable: str) -> float:
    try:
        millis = float(text)
    except ValueError:
        millis = math.nan
    if not math.isfinite(millis) or millis <= 0:
        raise ValueError(f"{variable} must be a positive number of milliseconds (got {shown(text)})")
    return millis / 1000


def _boolean(text: str, variable: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{variable} must be true or false (got {shown(text)})")
    return text.lower() == "true"


def _as_is(text: str, variable: str) -> str:
    return text


def _absolute(text: str, variable: str) -> str:
    return os.path.abspath(os.path.expanduser(text))  # relative to the working directory, not the file


#: export option, its environment variable, and how to read the variable
_OTEL_FALLBACKS: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    ("endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", _as_is),
    ("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", _as_is),
    ("headers", "OTEL_EXPORTER_OTLP_HEADERS", _pairs),
    ("compression", "OTEL_EXPORTER_OTLP_COMPRESSION", _as_is),
    ("timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", _millis),
    ("insecure", "OTEL_EXPORTER_OTLP_INSECURE", _boolean),
    ("ca_file", "OTEL_EXPORTER_OTLP_CERTIFICATE", _absolute),
    ("client_cert_file", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", _absolute),
    ("client_key_file", "OTEL_EXPORTER_OTLP_CLIENT_KEY", _absolute),
    ("service_name", "OTEL_SERVICE_NAME", _as_is),
)


def _apply_otel_env(tree: dict[Any, Any], env: Mapping[str, str], problems: list[Problem]) -> dict[Loc, str]:
    """Fills ``export`` options the file leaves out (or null); returns option path -> variable used."""
    export = tree.get("export")
    if export is None:
        export = {}
    if not isinstance(export, dict):
        return {}  # validation reports the section itself
    used: dict[Loc, str] = {}
    for option, variable, read in _OTEL_FALLBACKS:
        text = env.get(variable, "").strip()
        if not text or export.get(option) is not None:
            continue
        try:
            export[option] = read(text, variable)
        except ValueError as exc:
            problems.append(Problem(("export", option), str(exc)))
            continue
        used[("export", option)] = variable
    for signal, infix in (("logs", "LOGS"), ("spans", "TRACES")):
        _apply_signal_env(export, signal, infix, env, used, problems)
    text = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    configured = export.get("resource_attributes")
    if text and (configured is None or isinstance(configured, dict)):
        try:
            export["resource_attributes"] = {**_pairs(text, "OTEL_RESOURCE_ATTRIBUTES"), **(configured or {})}
        except ValueError as exc:
            problems.append(Problem(("export", "resource_attributes"), str(exc)))
    in_file = isinstance(configured, dict) and "service.name" in configured
    _service_name_from_resource(export, used, from_env=not in_file and "service.name" in _safe_pairs(text))
    if export:
        tree["export"] = export
    return used


def _apply_signal_env(
    export: dict[Any, Any],
    signal: str,
    infix: str,
    env: Mapping[str, str],
    used: dict[Loc, str],
    problems: list[Problem],
) -> None:
    """``OTEL_EXPORTER_OTLP_<LOGS|TRACES>_*`` into ``export.<signal>`` where the file's block leaves
    the option out: the file wins, then the signal's variable, then ``export``'s own (the file's,
    else the generic variable). A signal's endpoint variable is the full URL, used as-is."""
    block = export.get(signal)
    if block is not None and not isinstance(block, dict):
        return  # validation reports the block itself
    block = dict(block or {})
    for option, variable, read in _OTEL_FALLBACKS:
        if option == "service_name":
            continue
        name = variable.replace("OTEL_EXPORTER_OTLP_", f"OTEL_EXPORTER_OTLP_{infix}_", 1)
        text = env.get(name, "").strip()
        if not text or block.get(option) is not None:
            continue
        try:
            block[option] = read(text, name)
        except ValueError as exc:
            problems.append(Problem(("export", signal, option), str(exc)))
            continue
        used[("export", signal, option)] = name
    if block:
        export[signal] = block


def _safe_pairs(text: str) -> dict[str, str]:
    try:
        return _pairs(text, "OTEL_RESOURCE_ATTRIBUTES")
    except ValueError:
        return {}


def _service_name_from_resource(export: dict[Any, Any], used: dict[Loc, str], *, from_env: bool) -> None:
    """``service.name`` among the resource attributes names the service when neither
    ``export.service_name`` nor ``OTEL_SERVICE_NAME`` does (the OpenTelemetry precedence:
    OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, then the built-in default)."""
    attributes = export.get("resource_attributes")
    if export.get("service_name") is not None or not isinstance(attributes, dict):
        return
    name = attributes.get("service.name")
    if isinstance(name, str) and name.strip():
        export["service_name"] = name.strip()
        if from_env:
            used[("export", "service_name")] = "OTEL_RESOURCE_ATTRIBUTES"


# ── app_secret ───────────────────────────────────────────────────────────────────────────────


def _resolve_app_secret(
    section: object, env: Mapping[str, str], base_dir: Path | None, problems: list[Problem]
) -> tuple[str, str | None] | None:
    """``(secret, file it came from)``, or ``None`` with the problem recorded.

    Runs on the raw section so that a missing secret is reported together with every other
    problem; type errors of the two options are left to validation.
    """
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        return None
    secret = empty_to_none(section.get("app_secret"))
    secret_file = empty_to_none(section.get("app_secret_file"))
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value() or None
    if not isinstance(secret, (str, type(None))) or not isinstance(secret_file, (str, type(None))):
        return None
    if secret is not None and secret_file is not None:
        problems.append(Problem(("bkmonitor", "app_secret_file"), "set app_secret or app_secret_file, not both"))
        return None
    if secret is not None:
        return secret, None
    credentials = env.get("CREDENTIALS_DIRECTORY") or None
    if secret_file is not None:
        path = Path(secret_file).expanduser()
        base = Path(credentials) if credentials else base_dir
        if not path.is_absolute() and base is not None:
            path = base / path
    elif credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        path = Path(credentials) / CREDENTIAL_NAME
    else:
        problems.append(Problem(("bkmonitor", "app_secret"), "required (set app_secret or app_secret_file)"))
        return None
    path = path.absolute()
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        problems.append(Problem(("bkmonitor", "app_secret_file"), f"cannot read {path}: {exc.strerror or exc}"))
        return None
    except UnicodeDecodeError:
        problems.append(Problem(("bkmonitor", "app_secret_file"), f"cannot read {path}: not UTF-8 text"))
        return None
    if not value:
        problems.append(Problem(("bkmonitor", "app_secret_file"), f"{path} is empty"))
        return None
    return value, str(path)


# ── loading ──────────────────────────────────────────────────────────────────────────────────


def _plain(value: Any) -> Any:
    """A private, mutable copy of mappings and lists (the fallbacks edit the tree in place)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _take_unset(tree: Any, unset: Mapping[str, tuple[str, int]], loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Finds values holding an unset-variable marker, nulls them, and returns (option path, variable)."""
    found: list[tuple[Loc, str]] = []
    items: list[tuple[Any, Any]] = (
        list(tree.items()) if isinstance(tree, dict) else list(enumerate(tree)) if isinstance(tree, list) else []
    )
    for key, value in items:
        names = [name for marker, (name, _) in unset.items() if isinstance(value, str) and marker in value]
        key_names = [name for marker, (name, _) in unset.items() if isinstance(key, str) and marker in key]
        if key_names:
            del tree[key]
            found.extend(((*loc, f"${{{name}}}"), name) for name in key_names)
        elif names:
            tree[key] = None
            found.extend(((*loc, key), name) for name in names)
        else:
            found.extend(_take_unset(value, unset, (*loc, key)))
    return found


def _build(
    tree: Any,
    *,
    env: Mapping[str, str],
    base_dir: Path | None,
    source: Path | None,
    problems: list[Problem],
    unset: Mapping[str, tuple[str, int]] | None = None,
) -> Config:
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        kind = "a list" if isinstance(tree, list) else f"a {type(tree).__name__}"
        raise ConfigError(
            [
                *(p.line() for p in problems),
                f"config: must be a mapping of sections (bkmonitor:, …), not {kind}",
            ]
        )
    not_set = _take_unset(tree, unset) if unset else []
    from_env = _apply_otel_env(tree, env, problems)
    secret = _resolve_app_secret(tree.get("bkmonitor"), env, base_dir, problems)
    plugins = check_section(tree.get("plugins"))
    problems.extend(plugin_problems(plugins))
    destination_options = _check_destinations(tree.get("destinations"), base_dir, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(tree, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, from_env))
    # A null left by an unset variable says nothing new: report the variable instead.
    problems = [p for p in problems if not any(p.loc[: len(loc)] == loc for loc, _ in not_set)]
    problems.extend(Problem(loc, f"environment variable {name} is not set") for loc, name in not_set)
    if problems or config is None:
        raise ConfigError(sorted_lines(problems))
    if secret is not None:
        value, secret_file = secret
        bkmonitor = config.bkmonitor.model_copy(update={"app_secret": SecretStr(value), "app_secret_file": secret_file})
        config = config.model_copy(update={"bkmonitor": bkmonitor})
    if plugins.options:
        refs: dict[str, Any] = {
            kind: getattr(config.plugins, kind).model_copy(update={"options": options})
            for kind, options in plugins.options.items()
        }
        config = config.model_copy(update={"plugins": config.plugins.model_copy(update=refs)})
    config = _with_destinations(config, destination_options)
    config._source_path = source
    config._from_env = {".".join(map(str, loc)): variable for loc, variable in from_env.items()}
    return config


def _check_destinations(section: object, base_dir: Path | None, problems: list[Problem]) -> dict[int, Any]:
    """Each destination's ``options`` validated by its sink's model (``otlp``: the OTLP keys of
    ``export:``); problems at ``destinations.<n>.options.<option>``. Returns the validated models."""
    from pydantic import BaseModel

    from exporter.config.otlp import OtlpOptions
    from exporter.config.problems import describe
    from exporter.errors import PluginError
    from exporter.plugins import load_plugin

    found: dict[int, Any] = {}
    if not isinstance(section, list):
        return found
    for number, entry in enumerate(section):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("sink"), str):
            continue
        options = entry.get("options")
        if not (options is None or isinstance(options, Mapping)):
            continue
        model: type[BaseModel]
        if entry["sink"] == "otlp":
            model = OtlpOptions
        else:
            try:
                model = load_plugin("sink", entry["sink"]).options
            except PluginError as exc:
                problems.append(Problem(("destinations", number, "sink"), str(exc)))
                continue
        try:
            found[number] = model.model_validate(dict(options or {}), context={"base_dir": base_dir})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc: Loc = tuple(err["loc"])
                if err["type"] == "config_field":
                    loc, text = (*loc, err["ctx"]["field"]), str(err["ctx"]["message"])
                else:
                    text = describe(err, loc, model)
                problems.append(Problem(("destinations", number, "options", *loc), text))
    return found


def _with_destinations(config: Config, options: Mapping[int, Any]) -> Config:
    """The destinations with their validated options and their signals (``export.signals`` when
    they name none)."""
    if not config.destinations:
        return config
    destinations = tuple(
        d.model_copy(update={"options": options.get(n, d.options), "signals": d.signals or config.export.signals})
        for n, d in enumerate(config.destinations)
    )
    return config.model_copy(update={"destinations": destinations})


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Reads, substitutes, parses and validates the config file.

    ``path`` defaults to ``$BK_OTEL_EXPORTER_CONFIG``, else ``/etc/bk-otel-exporter/config.yaml``;
    ``env`` (default :data:`os.environ`) provides ``${VAR}`` values, the ``OTEL_*`` fallbacks and
    ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigError` listing every problem.
    """
    env = os.environ if env is None else env
    source = Path(path if path is not None else env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH).absolute()
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"config: cannot read {source}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: cannot read {source}: not UTF-8 text (byte {exc.start})"]) from None
    substituted = substitute(text, env)
    tree, yaml_problems = parse_yaml(substituted)
    problems = [Problem((), line) for line in (*substituted.problems, *yaml_problems)]
    return _build(tree, env=env, base_dir=source.parent, source=source, problems=problems, unset=substituted.unset)


def config_from_dict(
    raw: Mapping[str, Any], *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """The same validation as :func:`load_config` for an already parsed mapping (no ``${VAR}``).

    Relative paths resolve against ``base_dir`` (default: the working directory).
    """
    env = os.environ if env is None else env
    return _build(_plain(raw), env=env, base_dir=base_dir, source=None, problems=[])
