"""The house rules a reader relies on, checked on the source: no import cycle between
Deskhand's modules, no module over 400 lines without saying why, and the README's
"Where things live" table naming files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "mailbridge", "kb_loader")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _top_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Our modules that `name` imports when it is first imported (imports inside functions
    and under `if TYPE_CHECKING:` run later, or never, so they cannot make a cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle_between_deskhands_modules():
    modules = _modules()
    graph = {name: _top_level_imports(path, name, set(modules)) for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                # A package importing its own submodule is how packages re-export; only a
                # submodule importing back into a package that is still initialising it loops.
                loop = path[path.index(nxt):] + [node, nxt]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(loop, loop[1:])):
                    cycles.append(" -> ".join(loop))
            elif nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_a_module_over_400_lines_says_why_in_its_docstring():
    unexplained = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not re.search(r"(over|past|more than) 400 lines", docstring):
            unexplained.append(f"{name} ({text.count(chr(10))} lines)")
    assert not unexplained, "say why in the docstring: " + ", ".join(unexplained)


def test_the_readmes_where_things_live_table_names_files_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("Where things live:", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    folders = [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]
    for folder in folders:
        assert (ROOT / folder).is_dir(), folder
    for package in ("bot/brain/", "bot/hands/", "bot/handlers/", "bot/slack/", "bot/store/", "mailbridge/", "kb_loader/"):
        assert package in folders, f"{package} has no row"
    for row, folder in zip(rows, folders):
        for name in re.findall(r"`([\w/]+\.py)`", row):
            candidates = [ROOT / folder / name, ROOT / name]
            assert any(p.exists() for p in candidates), f"{name} (row {folder}) does not exist"
