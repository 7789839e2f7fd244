"""Throwaway plugin distributions for the plugin tests.

``write_distribution``  a module and its ``*.dist-info`` (METADATA, entry_points.txt) straight into a
                        directory: put the directory on ``sys.path`` and ``importlib.metadata`` finds
                        the entry points, exactly as for an installed distribution (unit tests).
``build_wheel``         the same as a real wheel file (PEP 427: the files, ``*.dist-info/WHEEL``,
                        ``METADATA``, ``entry_points.txt`` and a ``RECORD`` with hashes), for
                        ``pip install`` to install (integration tests). Built here rather than by a
                        build backend so the tests need neither the network nor ``wheel``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["build_wheel", "write_distribution"]

EntryPoints = Mapping[str, Mapping[str, str]]  # group -> name -> "module:attr"


def _normal(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def _metadata(dist: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: a throwaway bk-otel-exporter plugin\n"


def _entry_points(entry_points: EntryPoints) -> str:
    parts = []
    for group, names in entry_points.items():
        parts.append(f"[{group}]")
        parts.extend(f"{name} = {target}" for name, target in names.items())
        parts.append("")
    return "\n".join(parts)


def write_distribution(
    site: Path, dist: str, version: str, modules: Mapping[str, str], entry_points: EntryPoints
) -> Path:
    """Writes ``modules`` (file name -> source) and their dist-info into ``site``; returns ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / name).write_text(source, encoding="utf-8")
    info = site / f"{_normal(dist)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(_metadata(dist, version), encoding="utf-8")
    (info / "entry_points.txt").write_text(_entry_points(entry_points), encoding="utf-8")
    return site


def build_wheel(out: Path, dist: str, version: str, modules: Mapping[str, str], entry_points: EntryPoints) -> Path:
    """A pure-Python wheel of ``modules`` registering ``entry_points``; returns its path."""
    name = _normal(dist)
    info = f"{name}-{version}.dist-info"
    files = {
        **{path: source.encode() for path, source in modules.items()},
        f"{info}/METADATA": _metadata(dist, version).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": _entry_points(entry_points).encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel
