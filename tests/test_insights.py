"""The Insight-distiller: checkable statements with their supporting nodes, retired when contradicted,
and handed to later searches on the same task."""
from __future__ import annotations

from trex.events.evaluation import MetricRecorded
from trex.events.plans import PlanProposed
from trex.events.search import SearchStarted
from trex.events.trials import TrialFinished, TrialStarted
from trex.insights import distill
from trex.search import build_tree, fold

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QV = ["q_proj", "v_proj"]


def node(nid: str, score: float, lr: float, targets, rank: int = 8) -> list:
    plan = {"learning_rate": lr, "lora_rank": rank, "target_modules": targets, "lr_schedule": "cosine"}
    return [PlanProposed(node_id=nid, parent_id=None, operator="draft", plan=plan),
            TrialStarted(node_id=nid, trial_id=f"t{nid}"),
            TrialFinished(node_id=nid, trial_id=f"t{nid}", adapter=f"a{nid}"),
            MetricRecorded(node_id=nid, name="exact_match", value=score, primary=True)]


def tree_of(*nodes, sid="s1"):
    evs = [SearchStarted(task="arith-sub")] + [e for n in nodes for e in n]
    t = fold(evs)
    return t.__class__(**{**t.__dict__, "search_id": sid})


def test_an_insight_names_both_sides_and_every_supporting_node():
    t = tree_of(node("n1", 0.80, 5e-3, ALL), node("n2", 0.70, 5e-3, ALL),
                node("n3", 0.10, 5e-3, QV), node("n4", 0.05, 5e-3, QV))
    events = distill(t)
    texts = {e.text: e for e in events if type(e).__name__ == "InsightDistilled"}
    targets = [x for x in texts if x.startswith("targets all linear")]
    assert len(targets) == 1, texts
    ins = texts[targets[0]]
    assert "beats targets q,v" in ins.text and "arith-sub" in ins.text
    assert set(ins.support) == {"n1", "n2", "n3", "n4"}
    assert all(n in ins.text for n in ins.support)
    # the learning rate is the same everywhere: nothing is claimed about it
    assert not any("lr" in x.split(" (")[0] for x in texts)


def test_no_insight_from_too_few_nodes_or_a_small_gap():
    assert distill(tree_of(node("n1", 0.8, 5e-3, ALL), node("n2", 0.1, 5e-3, QV))) == []
    small = tree_of(node("n1", 0.50, 5e-3, ALL), node("n2", 0.51, 5e-3, ALL),
                    node("n3", 0.50, 5e-3, QV), node("n4", 0.49, 5e-3, QV), node("n5", 0.9, 2e-2, ["q_proj", "k_proj", "v_proj", "o_proj"]))
    assert not [e for e in distill(small) if "targets" in getattr(e, "text", "")]


def test_a_contradicted_insight_is_retired():
    first = [node("n1", 0.80, 5e-3, ALL), node("n2", 0.70, 5e-3, ALL),
             node("n3", 0.10, 5e-3, QV), node("n4", 0.05, 5e-3, QV)]
    t = tree_of(*first)
    t = fold(distill(t), start=t)
    assert len(t.insights) >= 1
    # later evidence: q,v plans do far better, all-linear ones far worse
    later = [node("n5", 0.95, 5e-3, QV), node("n6", 0.97, 5e-3, QV), node("n7", 0.0, 5e-3, ALL),
             node("n8", 0.0, 5e-3, ALL), node("n9", 0.9, 5e-3, QV)]
    t2 = fold([e for n in later for e in n], start=t)
    events = distill(t2)
    retired = [e for e in events if type(e).__name__ == "InsightRetired"]
    assert retired and all(e.insight_id in t.insights for e in retired)
    t3 = fold(events, start=t2)
    assert any(x.startswith("targets q,v") for x in t3.insights.values())
    assert not any(x.startswith("targets all linear") for x in t3.insights.values())
    assert distill(t3) == []  # up to date: nothing more to say


def test_a_new_search_receives_earlier_searches_insights(log):
    from trex.propose import prior_insights

    t = tree_of(node("n1", 0.80, 5e-3, ALL), node("n2", 0.70, 5e-3, ALL),
                node("n3", 0.10, 5e-3, QV), node("n4", 0.05, 5e-3, QV), sid="old")
    log.append("old", [SearchStarted(task="arith-sub")] + [e for n in (
        node("n1", 0.80, 5e-3, ALL), node("n2", 0.70, 5e-3, ALL), node("n3", 0.10, 5e-3, QV),
        node("n4", 0.05, 5e-3, QV)) for e in n] + distill(t))
    log.append("other-task", [SearchStarted(task="something-else")])
    log.append("new", [SearchStarted(task="arith-sub")])
    got = prior_insights(log, "arith-sub", exclude="new")
    assert got and all(v.startswith("[old] ") for v in got.values())
    assert set(got) == set(build_tree(log, "old").insights)


def test_the_insight_index_folds_on_and_only_the_source_search_retires_an_insight(log):
    from trex.events.insights import InsightDistilled, InsightRetired
    from trex.events.search import SearchForked
    from trex.search.insight_index import InsightIndex, prior_insights, refresh

    log.append("a", [SearchStarted(task="arith-sub"), InsightDistilled(insight_id="i1", text="rank 16 helps"),
                     InsightDistilled(insight_id="i2", text="lr 1e-2 diverges")])
    log.append("b", [SearchStarted(task="tickets"), InsightDistilled(insight_id="i3", text="other task")])
    idx = refresh(InsightIndex(), log)
    assert prior_insights(idx, "arith-sub", exclude="new") == {"i1": "[a] rank 16 helps",
                                                               "i2": "[a] lr 1e-2 diverges"}
    assert prior_insights(idx, "arith-sub", exclude="a") == {}
    # a fork of a (no task of its own) finds a new one (on a's task), and its distiller retires what it
    # inherited by id: that is not evidence against a's insight, which stays in force
    log.append("a~fork", [SearchForked(parent_search_id="a", at_seq=3), InsightRetired(insight_id="i2"),
                          InsightDistilled(insight_id="i4", text="q,v targets are enough")])
    idx2 = refresh(idx, log)
    assert prior_insights(idx2, "arith-sub", exclude="new") == {"i1": "[a] rank 16 helps",
                                                                "i2": "[a] lr 1e-2 diverges",
                                                                "i4": "[a~fork] q,v targets are enough"}
    assert idx2.seen == {"a": 3, "b": 2, "a~fork": 3}
    assert refresh(idx2, log) == idx2  # nothing new: the same index
    # another search cannot retire a's insights; a itself can
    log.append("c", [SearchStarted(task="tickets"), InsightRetired(insight_id="i1")])
    assert "i1" in prior_insights(refresh(idx2, log), "arith-sub", exclude="new")
    log.append("a", [InsightRetired(insight_id="i1", reason="refuted by n9")])
    assert "i1" not in prior_insights(refresh(idx2, log), "arith-sub", exclude="new")


def test_bad_cases_read_the_nodes_first_evaluation_outputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trex.events.evaluation import EvaluationFinished
    from trex.propose.researcher import tool_bad_cases

    rows = [{"input": f"{i}-1", "reference": str(i - 1), "output": str(i - 1 if i % 2 else i), "score": float(i % 2)}
            for i in range(6)]
    (tmp_path / "artifacts" / "evals").mkdir(parents=True)
    outs = f"evals/{'e1' * 32}.parquet"  # an outputs artifact's name: any other is never made a path
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "artifacts" / outs)
    t = fold([SearchStarted(task="arith-sub"), *node("n1", 0.5, 5e-3, QV),
              EvaluationFinished(node_id="n1", eval_id="e1", backend="x", n_examples=6, outputs_artifact=outs),
              EvaluationFinished(node_id="n1", eval_id="e2", backend="x", n_examples=6, outputs_artifact="other")])
    text = tool_bad_cases(tmp_path, t.nodes["n1"], n=2)
    assert text.startswith("0.500 mean score over 6 examples") and text.count("- input") == 2
    assert "expected '-1' got '0'" in text  # the worst (score 0) first
    assert tool_bad_cases(tmp_path, fold([SearchStarted(task="t"), *node("n2", 0.1, 5e-3, QV)]).nodes["n2"]) == \
        "node n2 has no evaluation outputs"
