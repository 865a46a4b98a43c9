"""The library's public names: each is what the README says it is, whatever was imported
first, and takes its inputs as documented."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pipeline
import pipeline.cli  # imports every module behind the public names, as the command does
from pipeline import BatchConfig, migrate
from tests.conftest import ROOT, assert_invariant, memory, rows, write_jsonl

CLASSES = {
    "BatchConfig",
    "ConfigError",
    "DatabaseError",
    "InputError",
    "PipelineError",
    "QueryError",
    "RejectSummary",
    "ReplayResult",
    "RunInterrupted",
    "RunResult",
    "RunStopped",
    "UnknownRunError",
}
FUNCTIONS = {
    "export_rejects",
    "list_runs",
    "migrate",
    "query",
    "recorded_config",
    "replay",
    "resolve_url",
    "stage_batch",
    "start_embedded",
    "stop_embedded",
    "summarize",
    "write_query",
}
# Prints, for every public name, its kind as `from pipeline import NAME` and `pipeline.NAME`
# give it, after importing the modules in argv, and again after importing every module.
KINDS_SCRIPT = """
import importlib, inspect, json, pkgutil, sys

def kind(value):
    return "class" if inspect.isclass(value) else "function" if inspect.isfunction(value) else repr(value)

def kinds():
    import pipeline
    found = {}
    for name in pipeline.__all__:
        scope = {}
        exec(f"from pipeline import {name} as value", scope)
        found[name] = [kind(scope["value"]), kind(getattr(pipeline, name))]
    return found

for module in sys.argv[1:]:
    importlib.import_module(module)
first = kinds()
import pipeline
for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    importlib.import_module(module.name)
print(json.dumps([first, kinds()]))
"""


def test_every_public_name_is_classified_here():
    assert set(pipeline.__all__) == CLASSES | FUNCTIONS


# Modules imported before the public names are looked up.
IMPORT_ORDERS = [
    (),
    ("pipeline.cli",),
    ("pipeline.bench", "pipeline.testing"),
    ("pipeline.__main__", "pipeline.inspect"),
]


@pytest.mark.parametrize(
    "first",
    IMPORT_ORDERS,
    ids=lambda modules: ",".join(modules) or "nothing",
)
def test_each_public_name_is_its_documented_kind_whatever_was_imported_first(first):
    done = subprocess.run(
        [sys.executable, "-c", KINDS_SCRIPT, *first], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = {name: ["class"] * 2 for name in CLASSES} | {name: ["function"] * 2 for name in FUNCTIONS}
    before, after = json.loads(done.stdout)
    assert before == expected
    assert after == expected


def test_no_module_of_the_package_takes_a_public_name():
    # A submodule, once imported, is an attribute of the package: it would hide the name.
    submodules = {module.name for module in pkgutil.iter_modules(pipeline.__path__)}
    assert submodules & set(pipeline.__all__) == set()


class PathLike:
    """A path object that is not a ``pathlib.Path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


@pytest.mark.parametrize("given", [str, Path, PathLike], ids=["str", "Path", "PathLike"])
def test_migrate_takes_one_path_as_one_input(db_url, db, tmp_path, monkeypatch, given):
    write_jsonl(tmp_path / "one.jsonl", [memory(n) for n in range(1, 6)])
    monkeypatch.chdir(tmp_path)
    result = migrate(given("one.jsonl"), BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert result.inputs == ["one.jsonl"]
    assert (result.processed, result.successful) == (5, 5)
    assert rows(db, "SELECT count(*) AS n FROM memories") == [{"n": 5}]


@pytest.mark.parametrize("given", [str, Path, PathLike], ids=["str", "Path", "PathLike"])
def test_replay_takes_its_file_as_a_str_or_a_path(db_url, db, tmp_path, given):
    original = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=42)])
    run = migrate([original], BatchConfig(log_progress=False), db_url=db_url)
    assert (run.successful, run.failed) == (1, 1)
    fixed = write_jsonl(tmp_path / "fix.jsonl", [memory(2)])
    result = pipeline.replay(given(str(fixed)), run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(result.run, db)
    assert (result.loaded, result.resolved) == (1, 1)


def test_without_dask_workers_name_what_to_install_from_the_dask_extra():
    script = (
        "import sys; sys.modules['distributed'] = None; "  # import distributed now raises ImportError
        "from pipeline.__main__ import main; main()"
    )
    command = [sys.executable, "-c", script, "migrate", str(ROOT / "data" / "sample.jsonl"), "--workers", "2"]
    command += ["--db", "postgresql://nobody@127.0.0.1:9/none"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # The package is not on PyPI: the hint names the extra's own requirements.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dask"]
    assert f"pip install {' '.join(repr(r) for r in extra)}" in done.stderr
