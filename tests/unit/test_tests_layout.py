"""The tests' own layout: shared plumbing lives in ``conftest.py`` fixtures, so no file under
``tests/`` imports another (``tests.*``, a relative import, or a test module by its bare name),
and every test folder is a package, so same-named test files in different folders don't clash."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imports_of_tests(path: Path, local_names: set[str]) -> list[str]:
    """The imports in ``path`` that reach another file under tests/ (``local_names``: stems)."""
    shown = path.relative_to(TESTS.parent) if path.is_relative_to(TESTS.parent) else path
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        bad += [f"{shown}:{node.lineno} imports {n!r}" for n in names
                if n.startswith(".") or n.split(".")[0] in local_names | {"tests"}]
    return bad


def test_no_test_file_imports_another():
    files = sorted(TESTS.rglob("*.py"))
    local = {p.stem for p in files} - {"__init__"}
    assert {"conftest", "test_layers"} <= local and len(files) > 50
    bad = [b for p in files for b in imports_of_tests(p, local)]
    assert not bad, "share test code as a fixture in a conftest.py instead:\n" + "\n".join(bad)


def test_every_test_folder_is_a_package():
    folders = {p.parent for p in TESTS.rglob("test_*.py")}
    missing = sorted(str(f.relative_to(TESTS.parent)) for f in folders
                     if not (f / "__init__.py").exists())
    assert not missing, f"add an empty __init__.py to {missing}: same-named test files clash"


def test_the_checker_finds_each_kind_of_test_import(tmp_path):
    # Prepare: one file per way of importing another test file, and one clean file
    cases = {"a.py": "from tests.integration import conftest\n",
             "b.py": "def f():\n    from .test_resume import _config\n",
             "c.py": "import test_resume\n",
             "d.py": "from . import conftest\n",
             "ok.py": "import pytest\nfrom gossipml.peer import Peer\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    # Execute
    found = {name: imports_of_tests(tmp_path / name, {"test_resume", "conftest"}) for name in cases}
    # Assert
    assert [len(found[n]) for n in sorted(cases)] == [1, 1, 1, 1, 0]
    assert "'.test_resume'" in found["b.py"][0] and found["c.py"][0].endswith("'test_resume'")
