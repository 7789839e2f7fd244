"""Flow record -> log record / span event, as plugins: the Mapper protocol (:mod:`.base`), the
CONTRACT.md mapper (:mod:`.default`) and the Elastic Common Schema mapper (:mod:`.ecs`).

The pure functions they are built from live in :mod:`exporter.mapping`.
"""

from exporter.mappers.base import GuardedMapper, Mapper

__all__ = ["GuardedMapper", "Mapper"]
