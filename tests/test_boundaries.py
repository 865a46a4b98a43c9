"""The shape of the code: data flows one way between packages, private names stay in their
module, each engine is imported where it belongs, modules stay short, and importing the
library does nothing but define names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Lowest first: a module may import its own layer and the ones before it, never one after.
LAYERS = [
    (
        "pipeline.schemas",
        "pipeline.errors",
        "pipeline.config",
        "pipeline.frames",
        "pipeline.expressions",
        "pipeline.faults",
        "pipeline.sqltext",
        "pipeline.datasets.base",
    ),
    ("pipeline.extract",),
    ("pipeline.normalize",),
    ("pipeline.dedup",),
    ("pipeline.load",),
    ("pipeline.datasets",),
    ("pipeline.run",),
    ("pipeline.inspect",),
    ("pipeline.replaying", "pipeline.bench", "pipeline.testing"),
    ("pipeline.cli", "pipeline.__main__", "pipeline"),
]
ENGINES = {
    "adbc_driver_manager": ("pipeline.load",),
    "adbc_driver_postgresql": ("pipeline.load",),
    "duckdb": ("pipeline.normalize", "pipeline.inspect"),
    # An extra: imported only when a run asks for workers.
    "distributed": ("pipeline.run.cluster",),
}
MAX_LINES = 450  # about 400: a module past it holds more than one job
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    # The schemas/ folder is the package pipeline.schemas (pipeline/schemas links to it).
    for package, folder in (("pipeline", ROOT / "pipeline"), ("pipeline.schemas", ROOT / "schemas")):
        for path in folder.rglob("*.py"):
            parts = (*package.split("."), *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module: str) -> int:
    """The layer of a module: the longest prefix of it that a layer names."""
    best = max(
        ((len(prefix), n) for n, names in enumerate(LAYERS) for prefix in names if _within(module, prefix)),
        default=None,
    )
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[1]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: imports are absolute in this project"
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def test_every_module_belongs_to_a_layer():
    for module in modules():
        layer(module)


@pytest.mark.parametrize("module", sorted(modules()))
def test_data_flows_one_way_between_packages(module):
    path = modules()[module]
    own = layer(module)
    for imported, names, line in imports(path, module):
        for target in [f"{imported}.{n}" for n in names if f"{imported}.{n}" in modules()] or [imported]:
            if target.split(".")[0] != "pipeline" or _within(module, target):
                continue
            assert layer(target) <= own, f"{path}:{line}: {module} imports {target}, a layer above it"


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_private_name_crosses_modules(module):
    path = modules()[module]
    ours = set(modules())
    aliases = {}
    for imported, names, line in imports(path, module):
        if imported.split(".")[0] != "pipeline":
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path}:{line}: imports private {private} from {imported}"
        aliases |= {n: f"{imported}.{n}" for n in names if f"{imported}.{n}" in ours}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {(a.asname or a.name): a.name for a in node.names if a.name in ours}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            raise AssertionError(f"{path}:{node.lineno}: uses private {aliases[node.value.id]}.{node.attr}")


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_engine_is_imported_only_where_it_belongs(engine):
    users = {
        module
        for module, path in modules().items()
        if any(imported.split(".")[0] == engine for imported, _, _ in imports(path, module))
    }
    assert users, f"nothing imports {engine}: update ENGINES"
    strays = {m for m in users if not any(_within(m, home) for home in ENGINES[engine])}
    assert not strays, f"{engine} imported outside {ENGINES[engine]}: {sorted(strays)}"


def test_modules_stay_short():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_functions_do_one_thing():
    """A function past ``MAX_FUNCTION_LINES`` does more than one thing; a command of the CLI
    is mostly the declaration of its options, and may."""
    long = {
        f"{module}.{node.name}": length
        for module, path in modules().items()
        if not module.startswith("pipeline.cli")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_importing_the_library_only_defines_names():
    engines = ("polars", "duckdb", "adbc_driver_manager", "pandera")
    script = (
        "import os, sys; import pipeline; "
        f"print(sorted(m for m in {engines} if m in sys.modules)); "
        "print(os.environ.get('POLARS_MAX_THREADS')); "
        "print(pipeline.migrate.__module__, pipeline.BatchConfig.__module__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "None", "pipeline.run.migrate pipeline.config"]


def test_the_command_runs_without_dask_until_asked_for_workers():
    script = "import sys, pipeline.cli; print('distributed' in sys.modules, 'dask' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_every_public_name_imports():
    import pipeline

    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None, name
