"""The public surface and the import boundaries."""

import ast
from pathlib import Path

import pipeline

PACKAGE = Path(pipeline.__file__).parent


def test_public_names_import():
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_loader_talks_to_the_database_driver():
    users = {
        p.name
        for p in PACKAGE.rglob("*.py")
        if imported_modules(p) & {"adbc_driver_postgresql", "adbc_driver_manager"}
    }
    assert users == {"loader.py"}


def test_stages_do_no_database_io():
    for stage in ("sources.py", "decode.py", "validate.py", "dedup.py", "datasets/memories.py"):
        assert "pipeline.loader" not in (PACKAGE / stage).read_text()
