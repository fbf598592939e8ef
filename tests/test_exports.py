"""trex's public API (``trex/__init__.py``) is pinned here: adding or removing a name is a
deliberate change of this list. ``import trex`` and ``trex --help`` stay light, and trex works
with no benchmark installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trex

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray", "vllm")

PUBLIC = [
    "ArtifactStore", "Budget", "EventError", "EventLog", "MetricSpec", "Node", "Plan", "Recipe", "SearchConfig",
    "SearchTree", "SpecError", "Task", "TaskSpec", "UnknownSearch", "build_tree", "default_home", "fold", "fork",
    "get_task", "install_task", "list_tasks", "load_split", "load_task_file", "parse_plan", "plan_hash",
    "prepare_task", "register_base_model", "register_data_generator", "register_scorer", "register_task",
    "run_search", "start_search", "tree_hash",
]


def test_all_is_pinned_and_sorted():
    assert PUBLIC == sorted(PUBLIC)
    assert trex.__all__ == PUBLIC


def test_every_name_resolves_to_what_its_package_defines():
    import importlib

    for name in PUBLIC:
        value = getattr(trex, name)
        module = importlib.import_module(trex._EXPORTS[name])
        assert value is getattr(module, name), name
    assert set(PUBLIC) <= set(dir(trex))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trex.nope  # noqa: B018
    from trex import cli  # a submodule is still imported as one

    assert cli.main is not None


def _python(code: str, *, block_ftbench: bool = False) -> subprocess.CompletedProcess:
    if block_ftbench:  # as if the benchmark were not installed: `import ftbench` raises ImportError
        code = "import sys; sys.modules['ftbench'] = None\n" + code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


_HELP = """
import sys
from trex.cli import main
sys.argv = ["trex"] + ARGS
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
"""
_LOADED = "\nimport json; print(json.dumps([m for m in %r if m in sys.modules]))" % (HEAVY,)


def _heavy(res) -> list[str]:
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_trex_is_light():
    assert _heavy(_python("import sys, trex; trex.__all__" + _LOADED)) == []


@pytest.mark.parametrize("args", [["--help"], ["sql", "--help"], ["replay", "--help"]])
def test_trex_help_is_light(args):
    res = _python(_HELP.replace("ARGS", repr(args)) + _LOADED)
    assert "Usage:" in res.stdout
    assert _heavy(res) == []


def test_trex_works_without_the_benchmark():
    res = _python("import trex.tasks, trex\n"
                  "assert trex.tasks.list_tasks() == []\n"
                  "try:\n    trex.get_task('arith-sub')\nexcept KeyError as e:\n    print('refused:', e)\n",
                  block_ftbench=True)
    assert "refused:" in res.stdout and "unknown task 'arith-sub'" in res.stdout
    res = _python(_HELP.replace("ARGS", "['--help']") + _LOADED, block_ftbench=True)
    assert "Commands:" in res.stdout and _heavy(res) == []
