"""The configuration: one YAML file in, one frozen and validated :class:`Config` out.

::

    file ──read──> text ──${VAR} substitution──> YAML ──safe_load──> mapping
         ──OTEL_* fallbacks──> pydantic validation ──app_secret resolution──> Config

Every step collects its problems instead of stopping at the first; all of them end up in one
:class:`~exporter.errors.ConfigError`, one ``"option.path: what is wrong"`` line each. No line
ever repeats a secret: messages are built from the option path and the error kind, and an input
is quoted back only for durations, enumerations and similar non-secret values.

Rules an operator can rely on (the example file ``config/exporter.example.yaml`` shows them):

* every section and every option is optional except ``bkmonitor.base_url``, ``bkmonitor.app_code``
  and a secret; an option left empty (``null``) takes its default;
* unknown keys are errors, with the closest valid name suggested;
* durations are floats in seconds once validated; the file may say ``250ms``, ``30s``, ``5m``,
  ``1h``, ``1d`` (or combinations such as ``1h30m``) or plain seconds;
* ``${VAR}`` / ``${VAR:-default}`` are substituted in the text before parsing (``$$`` is a
  literal ``$``); a reference that makes up a whole plain scalar stays a string, so a secret of
  digits (or ``yes``, ``0x1f`` …) arrives verbatim. A reference to an unset variable inside a
  YAML comment is ignored;
* relative file paths resolve against the config file's directory (``app_secret_file``: against
  ``$CREDENTIALS_DIRECTORY`` first, where systemd's ``LoadCredential=`` puts credentials);
* the standard ``OTEL_*`` environment variables fill the ``export`` options the file leaves out;
  ``OTEL_RESOURCE_ATTRIBUTES`` is merged under ``export.resource_attributes`` (the file wins);
* ``plugins.<source|mapper|sink>`` selects an installed plugin by ``name`` (an unknown name is
  reported with the installed ones); its ``options`` are validated by the plugin's own model
  (:mod:`exporter.plugins`) and reported under ``plugins.<kind>.options.<option>``. A validated
  config holds the plugin's options model instance in ``options``.

The modules, in the order of the data path:

=================  ==========================================================================
``types``          :data:`Duration` and its spelling, the listen address (a leaf: no imports
                   from the rest of the package; ``exporter.server`` uses its parser)
``envsubst``       ``${VAR}`` substitution and the YAML loader that knows where it substituted
``fields``         the base of every section and the field types and validators they share
``model``          the section models and :class:`Config`
``problems``       pydantic errors (the config's and the plugins') -> sorted problem lines
``loader``         :func:`load_config`, :func:`config_from_dict`: ``OTEL_*``, ``app_secret``
``render``         :func:`redacted_dict`, :func:`render_effective` (secrets masked by
                   :mod:`exporter.redact`)
=================  ==========================================================================

Only pydantic and PyYAML are imported (and :mod:`exporter.plugins`, which is light):
``import exporter.config`` stays cheap; validating the ``plugins`` section imports the selected
plugins' modules, which are light by contract.
"""

from __future__ import annotations

from exporter.config.envsubst import substitute_env
from exporter.config.loader import CONFIG_ENV, CREDENTIAL_NAME, DEFAULT_CONFIG_PATH, config_from_dict, load_config
from exporter.config.model import (
    AlarmsConfig,
    BkMonitorConfig,
    Config,
    ExportConfig,
    ExportRetryConfig,
    LoggingConfig,
    PluginConfig,
    PluginsConfig,
    PollConfig,
    RecentConfig,
    RetryConfig,
    ServerConfig,
    StateConfig,
)
from exporter.config.render import redacted_dict, render_effective
from exporter.config.types import Duration, format_duration, parse_duration

__all__ = [
    "CONFIG_ENV",
    "CREDENTIAL_NAME",
    "DEFAULT_CONFIG_PATH",
    "AlarmsConfig",
    "BkMonitorConfig",
    "Config",
    "Duration",
    "ExportConfig",
    "ExportRetryConfig",
    "LoggingConfig",
    "PluginConfig",
    "PluginsConfig",
    "PollConfig",
    "RecentConfig",
    "RetryConfig",
    "ServerConfig",
    "StateConfig",
    "config_from_dict",
    "format_duration",
    "load_config",
    "parse_duration",
    "redacted_dict",
    "render_effective",
    "substitute_env",
]
