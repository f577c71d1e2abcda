"""Dependency boundaries: litellm only in litellm_adapter/, redis only in the Redis store, no torch in the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "costkit_litellm"

# Where each heavy dependency may be imported, relative to the package.
ALLOWED = {
    "litellm": ("litellm_adapter/",),
    "redis": ("store/redis.py", "store/resp.py", "testing/redis_server.py", "cache/redis_backend.py"),
    "redisvl": ("cache/redis_backend.py",),
    "torch": (),
    "sentence_transformers": ("embeddings/local.py",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


class TestBoundaries:
    def test_heavy_dependencies_are_imported_only_at_their_boundary(self) -> None:
        """litellm only in litellm_adapter/, redis only in the Redis store, sentence-transformers in the embedder."""
        offenders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = path.relative_to(PACKAGE).as_posix()
            for module in _imports(path) & ALLOWED.keys():
                if not relative.startswith(ALLOWED[module]):
                    offenders.append(f"{relative} imports {module}")
        assert offenders == []

    def test_core_imports_without_litellm_or_torch(self) -> None:
        """Importing the pack and its pure modules loads neither litellm nor torch."""
        pure = [
            p.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
            for p in PACKAGE.rglob("*.py")
            if not p.relative_to(PACKAGE).as_posix().startswith(("litellm_adapter/", "testing/"))
            and p.name != "__main__.py"
        ]
        code = (
            "import importlib, sys\n"
            f"for name in {sorted(pure)!r}:\n"
            "    importlib.import_module(name.removesuffix('.__init__'))\n"
            "print(sorted(m for m in ('litellm', 'torch', 'sentence_transformers') if m in sys.modules))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "[]"
