"""Flow record -> SDK-free OpenTelemetry values: pure functions, and the mappers built on them.

``base``        the Mapper protocol (what a mapper plugin must keep) and GuardedMapper
``contract``    the built-in ``default`` mapper: the reference mapping (docs/reference.md)
``ecs``         the built-in ``ecs`` mapper: the same records under Elastic Common Schema names
``attributes``  the ``bk.*`` alarm attributes and the dotted ``extend_info`` leaves
``ids``         stable record uids and the alarm's deterministic trace/span ids
``spans``       an alarm's records -> SpanRecord (docs/reference.md, "As spans")
"""

from exporter.mapping.base import GuardedMapper, Mapper

__all__ = ["GuardedMapper", "Mapper"]
