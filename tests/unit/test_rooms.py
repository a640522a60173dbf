"""What may import what (ARCHITECTURE.md): checked on the source, with ``ast``.

``bus/`` imports nothing of ours; ``actors/`` and ``api/`` import ``bus/`` and never
each other (they meet on NATS); ``cli/`` (the ``rbot`` command) is the one place
that imports both; ``bench/`` never imports ``tests/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> its package name, and the packages of ours it may not import
ROOMS = {
    "bus": ("rbot.bus", ("rbot.actors", "rbot.api", "rbot.cli", "tests", "bench")),
    "actors": ("rbot.actors", ("rbot.api", "rbot.cli", "tests", "bench")),
    "api": ("rbot.api", ("rbot.actors", "rbot.cli", "tests", "bench")),
    "cli": ("rbot.cli", ("tests", "bench")),
    "bench": ("bench", ("tests",)),
}


def imported(source: str, rel: Path, package: str) -> set[str]:
    """Every module a file imports (anywhere in it), relative imports resolved as if
    it sat at ``rel`` (a path under its room's folder) in ``package``; a name taken
    from a module counts as ``module.name`` too (it may be a submodule)."""
    parts = [*package.split("."), *rel.parts[1:-1]]  # the file's own package
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, str(rel))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(room: str) -> list[str]:
    package, banned = ROOMS[room]
    found = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for name in imported(path.read_text(), path.relative_to(ROOT), package):
            if any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_rooms_import_only_what_they_may(room: str) -> None:
    assert _forbidden(room) == []


def test_the_checker_sees_relative_and_lazy_imports() -> None:
    """The check is no check if it misses ``from ...api import x`` inside a function."""
    src = (
        "def f():\n    from ...api import users\n    import rbot.api.app\n    from . import fills\n"
    )
    got = imported(src, Path("actors/paper/engine.py"), "rbot.actors")
    assert {"rbot.api.users", "rbot.api.app", "rbot.actors.paper.fills"} <= got
    assert "rbot.actors.base" in imported(
        "from .base import Actor", Path("actors/x.py"), "rbot.actors"
    )
    assert "rbot.api" in imported("from rbot import api", Path("actors/x.py"), "rbot.actors")


def test_rbot_actors_loads_no_api_code() -> None:
    """``rbot actors`` parses the whole command line and imports every actor, and
    still loads neither the user store, the password hasher, nor FastAPI."""
    code = (
        "import sys\n"
        "from rbot.cli.main import parser\n"
        "from rbot.actors.registry import actor_classes\n"
        "from rbot.bus.config import Settings\n"
        "parser().parse_args(['actors'])\n"
        "actor_classes(Settings())\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('argon2', 'fastapi', 'starlette', 'uvicorn') "
        "or m in ('rbot.api.users', 'rbot.api.passwords', 'rbot.api.app'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
