"""Where flow records come from: the Source protocol (:mod:`.base`) and the BlueKing source (:mod:`.bkmonitor`).

Importing this package is light: the BlueKing client (and ``requests``) load only when the
``bkmonitor`` source is created.
"""

from exporter.sources.base import Discovered, FetchResult, Malformed, Source

__all__ = ["Discovered", "FetchResult", "Malformed", "Source"]
