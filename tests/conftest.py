"""Shared fixtures. Each area keeps its fixtures in its own plugin module.

The benchmark's task plugin: where the installed metadata predates the ``trex.tasks`` entry point
(an editable install not reinstalled since), name it in ``TREX_TASK_PLUGINS`` so that this
process and every subprocess (CLI runs, Ray workers) have the built-in tasks.
"""
import os
from importlib.metadata import entry_points

FTBENCH_PLUGIN = "ftbench.tasks:register"
if not any(ep.value == FTBENCH_PLUGIN for ep in entry_points(group="trex.tasks")):
    os.environ["TREX_TASK_PLUGINS"] = ",".join(
        x for x in (os.environ.get("TREX_TASK_PLUGINS", ""), FTBENCH_PLUGIN) if x)

pytest_plugins = [
    "tests.plugins.log_fixtures",
    "tests.plugins.model_fixtures",
    "tests.plugins.search_fixtures",
    "tests.plugins.llm_fixtures",
    "tests.plugins.ray_fixtures",
    "tests.plugins.s3_fixtures",
]
