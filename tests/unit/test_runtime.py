"""Process-wide settings of the long-running commands (exporter.runtime)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from exporter import runtime


def test_the_malloc_arena_cap_is_set_on_glibc_in_a_fresh_process() -> None:
    code = "from exporter.runtime import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_an_operators_own_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert runtime.limit_malloc_arenas() is False


def test_a_c_library_without_mallopt_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)

    def no_libc(*args: object, **kwargs: object) -> object:
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert runtime.limit_malloc_arenas() is False


def test_the_daemon_commands_set_it_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter import cli

    calls: list[str] = []
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda: calls.append("arenas") or True)
    monkeypatch.setattr(cli, "_cmd_check_config", lambda args: calls.append("check-config") or 0)
    monkeypatch.setattr(cli, "_cmd_once", lambda args: calls.append("once") or 0)
    assert cli.main(["check-config"]) == 0
    assert cli.main(["once"]) == 0
    assert calls == ["check-config", "arenas", "once"]
