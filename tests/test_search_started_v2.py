"""SearchStarted v2: typed settings, read from v1 logs by a pure upcaster (old homes keep working)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from trex.events.base import upcast
from trex.events.envelope import RawEvent
from trex.events.log import EventLog
from trex.events.search import SearchStarted, task_def_hash
from trex.search import build_tree

V1_CONFIG = {"trial_steps": 150, "batch_size": 16, "eval_limit": 40, "trial_time_limit_s": 900.0, "threads": None,
             "llm": {"model_dir": "/models/x", "max_attempts": 2, "api_flavour": "old"}, "llm_temperature": 0.2,
             "max_llm_tokens": 5000, "prior_insights": False, "metric_direction": "min",
             "policy_params": {"num_drafts": 2}, "search_url": "http://127.0.0.1:9/search",
             "ftbench": {"tag": "baseline", "task": "arith-sub", "proposer": "llm", "seed": 2},
             "something_else": [1, 2]}


def test_v1_config_moves_to_typed_fields_and_unknown_keys_to_labels():
    v1 = {"task": "arith-sub", "proposer": "llm", "seed": 2, "config": V1_CONFIG}
    s = SearchStarted(**upcast("SearchStarted", 1, v1))
    assert (s.trial.steps, s.trial.batch_size, s.trial.eval_limit, s.trial.time_limit_s, s.trial.threads) == (
        150, 16, 40, 900.0, None)
    assert (s.llm.model_dir, s.llm.max_attempts, s.llm.temperature, s.llm.max_total_tokens) == ("/models/x", 2, 0.2,
                                                                                                 5000)
    assert s.prior_insights is False and s.metric_direction == "min" and s.policy_params == {"num_drafts": 2}
    assert s.search_url == "http://127.0.0.1:9/search"
    assert s.labels == {"ftbench_tag": "baseline", "ftbench_task": "arith-sub", "ftbench_proposer": "llm",
                        "ftbench_seed": "2", "llm_api_flavour": "old", "something_else": "[1, 2]"}
    assert upcast("SearchStarted", 1, {"task": "t"}) == {"task": "t", "trial": {}, "metric_direction": "max",
                                                         "llm": {}, "labels": {}}
    assert SearchStarted(**upcast("SearchStarted", 1, {"task": "t"})) == SearchStarted(task="t")  # defaults alike


def test_a_v1_home_with_a_user_task_resumes_its_definition_into_a_fresh_home(tmp_path):
    """A v1 log carrying a user's task definition, imported into a home that never installed it."""
    from trex.commands.run_cmds import _check_task
    from trex.tasks import get_task

    mine = get_task("tickets").model_copy(update={"name": "my-tickets"}).model_dump(mode="json")
    v1 = {"task": "my-tickets", "proposer": "random", "config": {"trial_steps": 12, "task_def": mine,
                                                               "metric_direction": "max"}}
    home = tmp_path / "fresh"
    log = EventLog(home)
    log.append_raw("old-search", [RawEvent("e1", "SearchStarted", 1, json.dumps(v1), "2026-11-20T00:00:00.000000Z")])
    tree = build_tree(log, "old-search")
    assert tree.started.trial.steps == 12 and tree.started.task_def == mine
    assert tree.started.task_def_hash == task_def_hash(mine)
    _check_task(tree.task, home, tree.started.task_def)  # what `trex resume` does first
    assert get_task("my-tickets", home).metrics == get_task("tickets").metrics


def test_a_finished_v1_search_from_an_old_home_is_reported_by_trex_resume(tmp_path):
    from trex.cli import main
    from trex.events.transfer import import_file
    from tests.test_old_logs import VERSIONS

    home = tmp_path / "home"
    import_file(EventLog(home), sorted(VERSIONS[0].glob("*.parquet"))[0])
    sid = EventLog(home).searches()[0]
    r = CliRunner().invoke(main, ["resume", sid, "--home", str(home), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "already finished" in r.stderr
    tree = build_tree(EventLog(home), sid)
    assert tree.started.trial.steps in (12, 150) and tree.started.labels["ftbench_tag"] == "baseline"


def test_v1_values_the_old_fold_tolerated_are_kept_as_labels_not_a_crash():
    odd = {"task": "t", "config": {"trial_steps": 0, "metric_direction": "maximize", "llm": [1], "ftbench": "x",
                                   "threads": -2}}
    s = SearchStarted(**upcast("SearchStarted", 1, odd))
    assert s.trial.steps == 100 and s.trial.threads is None and s.metric_direction == "max"
    assert s.labels == {"v1_trial_steps": "0", "v1_threads": "-2", "v1_metric_direction": "maximize",
                        "v1_llm": "[1]", "ftbench": "x"}
    assert SearchStarted(**upcast("SearchStarted", 1, {"task": "t", "config": [1, 2]})).labels == {
        "v1_config": "[1, 2]"}
