"""The app's code stays in small pieces: no function in chexgen_ui/ (and chexgen_ui/tabs/) longer than 80 lines, and
the tab modules never import chexgen_ui.app (app.py assembles the tabs; what they share is chexgen_ui.widgets)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UI = REPO / "chexgen_ui"
MAX_LINES = 80
# Functions still being split by work under way elsewhere, each capped at its length today so it cannot grow:
# (none left: reader_study.build was split into layout and wiring functions)
PENDING: dict[str, int] = {}


def function_lengths(source: str) -> dict[str, int]:
    """``qualified name -> lines from its ``def`` line to its last line`` for every function, nested ones included."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def ui_files() -> list[Path]:
    return sorted([*UI.glob("*.py"), *(UI / "tabs").glob("*.py")])


def test_function_lengths_counts_def_to_end_including_nested_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    src = f"def outer():\n    def inner():\n        return 1\n{body}\n\n\nclass C:\n    async def m(self):\n        pass\n"
    assert function_lengths(src) == {"outer": 82, "outer.inner": 2, "C.m": 2}


def test_no_function_in_the_app_is_longer_than_80_lines():
    too_long = {}
    for path in ui_files():
        rel = path.relative_to(REPO).as_posix()
        for name, lines in function_lengths(path.read_text()).items():
            if lines > PENDING.get(f"{rel}::{name}", MAX_LINES):
                too_long[f"{rel}::{name}"] = lines
    assert too_long == {}, f"split these (at most {MAX_LINES} lines from def to end): {too_long}"
    assert len(ui_files()) >= 10 and (UI / "tabs" / "generate.py") in ui_files()  # the glob found the tabs


def test_every_tab_has_its_module_and_none_imports_the_app():
    tabs = {p.stem for p in (UI / "tabs").glob("*.py")} - {"__init__"}
    assert {"generate", "embedding_map", "fidelity", "batch", "leaderboard", "setup", "reader_study"} <= tabs
    for path in [*(UI / "tabs").glob("*.py"), UI / "widgets.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                assert mod not in ("..app", ".app", "chexgen_ui.app"), f"{path.name} imports the app ({mod})"
                assert not (mod in ("..", ".") and any(a.name == "app" for a in node.names)), path.name
