"""The package's layout rules that import-linter does not state (its contracts in pyproject.toml do the
layers and the circles; scripts/test.sh runs `lint-imports`):

- an in-package import inside a function is for an optional heavy dependency, an optional part or a
  real cycle-breaker only, and says which on its line (``# heavy: …``, ``# optional: …``, ``# cycle: …``);
- no function re-imports what its module already imports at the top, and no module imports itself;
- the package root holds only its face.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dualdistill"
REASONS = ("# heavy:", "# optional:", "# cycle:")
# A standalone script the sandbox runs by path, before the package is importable there.
STANDALONE = {PACKAGE / "sandbox" / "_zygote.py"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _local_imports(tree: ast.Module):
    """In-package imports below the top level, outside ``if TYPE_CHECKING:`` blocks."""
    top_level_ifs = [n for n in tree.body if isinstance(n, ast.If)]
    typing_only = {id(n) for block in top_level_ifs for n in ast.walk(block)
                   if "TYPE_CHECKING" in ast.unparse(block.test)}  # fmt: skip
    for node in ast.walk(tree):
        if node in tree.body or id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dualdistill"):
            yield node, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dualdistill"):
                    yield node, alias.name


def _top_imports(tree: ast.Module) -> set[tuple[str, str]]:
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {(node.module, a.name) for a in node.names}
    return out


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path not in STANDALONE:
            text = path.read_text(encoding="utf-8")
            yield path, text, ast.parse(text)


def test_local_in_package_imports_say_why():
    bad = []
    for path, text, tree in _sources():
        lines = text.splitlines()
        for node, _ in _local_imports(tree):
            if not any(r in lines[node.lineno - 1] for r in REASONS):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "imports inside functions without a reason (move them to the top):\n" + "\n".join(bad)


def test_no_repeated_or_self_imports():
    bad = []
    for path, _, tree in _sources():
        me, top = _module(path), _top_imports(tree)
        for node, module in _local_imports(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if any((module, n) in top for n in names):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: repeats a top-level import")
        for node in tree.body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == me
                and not all(
                    (path.parent / f"{a.name}.py").exists() for a in node.names
                )  # a face loading its parts
            ):
                bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: imports itself")
    assert not bad, "\n".join(bad)


def test_the_root_holds_only_the_face():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py"], modules
