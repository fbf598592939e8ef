"""The hybrid Researcher: the LLM chooses among the rules' candidate edits (each a hypothesis citing the
evidence tool calls it rests on), falls back to the top-ranked one when the model fails, and — behind
``--llm-url`` — may answer a plan of its own, which the Executor's guard still checks.

The model under the proposer is scripted (a backend object, or an OpenAI-compatible HTTP server):
what is under test is the proposer's use of its answers, the evidence and the recorded events.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.test_rules_proposer import CONS, DS, TASK, node, plan
from trex.events.plans import LlmCallFailed, ToolCalled
from trex.events.search import LlmSettings, SearchStarted
from trex.llm import LLMClient
from trex.llm.types import Completion, Usage
from trex.propose import propose
from trex.propose.rules import gather_evidence, ranked_candidates
from trex.search import fold
from trex.search.policy import Decision


class Scripted:
    """A model that answers ``texts`` in turn (the last one again when they run out)."""

    name, model = "scripted", "scripted"

    def __init__(self, *texts):
        self.texts, self.seen = list(texts), []

    def count_tokens(self, messages):
        return 10

    def complete(self, messages, **kw):
        self.seen.append(messages)
        text = self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]
        return Completion(text=text, usage=Usage(10, 5), finish_reason="stop")


class Recorder:
    """``emit(event, event_id=None)`` as the Researcher's shell gives it: events with their ids."""

    def __init__(self):
        self.events = []

    def __call__(self, ev, event_id=None):
        self.events.append((event_id, ev))

    def tool_ids(self):
        return {eid: ev for eid, ev in self.events if isinstance(ev, ToolCalled)}


def forgetting_tree(**started):
    return fold([SearchStarted(task=TASK, constraints=CONS, proposer="llm", **started),
                 *node("n1", plan(), 0.6, 0.02)])


def ask(tree, decision, backend, tmp_path):
    rec = Recorder()
    client = LLMClient(backend, emit=rec, max_attempts=3)
    prop = propose(tree, decision, home=tmp_path, search_id="s", emit=rec, client=client)
    return prop, rec


IMPROVE = Decision("n1", "improve", "mcts", 0, 1, "d1")


def choice_of(tree, nid: str, rationale: str, **changes) -> str:
    """A PlanChoice answer holding node ``nid``'s values (with ``changes``): every field the schema has."""
    from trex.propose import space
    from trex.propose.space import values_of

    props = space.plan_choice_model(DS).model_json_schema()["properties"]
    v = {**values_of(dict(tree.nodes[nid].plan), tree.started.trial.steps, DS), "continue_from_parent": False,
         **changes}
    return json.dumps({"rationale": rationale, **{k: v[k] for k in props if k != "rationale" and k in v}})


def test_the_llm_chooses_among_the_rules_candidates_and_the_hypothesis_cites_the_evidence(tmp_path):
    tree = forgetting_tree()
    ranked = ranked_candidates(tree, tree.nodes["n1"], task=TASK, steps=tree.started.trial.steps,
                               batch_size=tree.started.trial.batch_size, data=DS)
    assert len(ranked) >= 2 and ranked[0].candidate.edit == "replay"
    k = len(ranked)  # asked three times, the menu rotated by one, then by two: the same candidate each time
    model = Scripted('{"rationale": "n1 underfits per training_curve", "choice": 2}',
                     '{"rationale": "n1 underfits per training_curve", "choice": 1}',
                     f'{{"rationale": "n1 underfits per training_curve", "choice": {(1 - 2) % k + 1}}}')
    prop, rec = ask(tree, IMPROVE, model, tmp_path)
    assert prop.plan == ranked[1].proposal.plan and prop.rationale.startswith(f"chose 2 of {k} (and again with the "
                                                                              f"menu rotated twice)")
    assert len(model.seen) == 3
    tools = rec.tool_ids()
    assert {"task_data", "read_insights", "training_curve", "constraint_slack"} <= {t.tool for t in tools.values()}
    h = prop.hypothesis
    assert h is not None and h.cites and all(c in tools for c in h.cites)  # it cites recorded tool calls
    assert h.metric and h.op in (">", ">=", "<", "<=") and isinstance(h.threshold, float)
    slack = next(t for t in tools.values() if t.tool == "constraint_slack")
    assert "add_exact_match 0.02 vs >= 0.9: slack -0.88 (violated)" in slack.result
    # the prompt is the evidence and the menu, bounded, with no hyperparameter advice
    messages, rotated, _ = model.seen
    prompt = "\n".join(m["content"] for m in messages)
    assert "1. replay:" in prompt and "2. " in prompt and "slack -0.88" in prompt
    assert f"{k}. replay:" in "\n".join(m["content"] for m in rotated)
    assert "usually" not in prompt and "1e-3" not in prompt and len(prompt) < 6000, len(prompt)


def test_junk_from_the_model_falls_back_to_the_top_ranked_candidate_with_the_failure_recorded(tmp_path):
    tree = forgetting_tree()
    ranked = ranked_candidates(tree, tree.nodes["n1"], task=TASK, steps=tree.started.trial.steps,
                               batch_size=tree.started.trial.batch_size, data=DS)
    prop, rec = ask(tree, IMPROVE, Scripted("sure! replay, lots of it"), tmp_path)
    assert prop.plan == ranked[0].proposal.plan
    assert prop.rationale.startswith("LLM failed") and "top-ranked candidate" in prop.rationale
    assert sum(isinstance(ev, LlmCallFailed) for _, ev in rec.events) == 3
    assert prop.hypothesis is not None and prop.hypothesis.metric == "add_exact_match"


def test_a_draft_the_model_cannot_answer_takes_the_optimisers_plan_and_never_a_repeat(tmp_path):
    tree = forgetting_tree()
    prop, rec = ask(tree, Decision(None, "draft", "mcts", 0, 2, "d2"), Scripted("no idea"), tmp_path)
    assert prop.plan is not None and prop.rationale.startswith("LLM failed") and "optimiser" in prop.rationale
    table = [eid for eid, ev in rec.events if isinstance(ev, ToolCalled) and ev.tool == "tried_plans"]
    assert prop.hypothesis is not None and set(prop.hypothesis.cites) <= set(table) and prop.hypothesis.cites
    # a model that answers exactly n1's plan where it writes the values (a debug): the repeat is
    # replaced by the optimiser's numbers (a draft's choices are the optimiser's new plans already)
    from trex.events.search import TrialSettings
    from trex.propose.rules import signature, tried
    from trex.propose.space import values_of

    tree = forgetting_tree(trial=TrialSettings(steps=40, batch_size=16))  # n1's plan: 40 steps, batch 16
    prop, rec = ask(tree, Decision("n1", "debug", "mcts", 0, 3, "d3"), Scripted(choice_of(tree, "n1", "n1 again")),
                    tmp_path)
    assert not any(isinstance(ev, LlmCallFailed) for _, ev in rec.events)  # the model's answer was valid
    assert prop.plan is not None and prop.rationale.startswith("the LLM's plan repeated a tried plan")
    got = values_of(prop.plan.model_dump(mode="json"), tree.started.trial.steps, DS) | {
        "continue_from_parent": prop.plan.continue_from_parent}
    assert signature(got) not in tried(tree, tree.started.trial.steps, DS)


def test_a_draft_is_the_models_choice_among_the_optimisers_new_plans(tmp_path):
    """A draft: the optimiser's points (none a repeat, none alike), the LLM picks one by number; the
    menu shows each draft's values, and the hypothesis cites the recorded tried-plans table."""
    from trex.propose.rules import draft_candidates, signature, tried

    tree = forgetting_tree()
    d = Decision(None, "draft", "mcts", 0, 2, "d2")
    drafts, _ = draft_candidates(tree, d, task=TASK, steps=tree.started.trial.steps,
                                 batch_size=tree.started.trial.batch_size, data=DS)
    sigs = [signature(r.candidate.values) for r in drafts]
    assert len(drafts) == 3 and len(set(sigs)) == 3 and not set(sigs) & tried(tree, tree.started.trial.steps, DS)
    model = Scripted('{"rationale": "3 explores a higher learning rate than n1", "choice": 3}',
                     '{"rationale": "2 explores a higher learning rate than n1", "choice": 2}',
                     '{"rationale": "1 explores a higher learning rate than n1", "choice": 1}')
    prop, rec = ask(tree, d, model, tmp_path)
    assert prop.plan == drafts[2].proposal.plan and prop.rationale.startswith("chose 3 of 3")
    messages, _, _ = model.seen
    prompt = "\n".join(m["content"] for m in messages)
    assert "New plans (drafts)" in prompt and "3. learning_rate " in prompt and len(prompt) < 6000
    tables = {eid for eid, ev in rec.events if isinstance(ev, ToolCalled) and ev.tool == "tried_plans"}
    assert prop.hypothesis is not None and prop.hypothesis.cites and set(prop.hypothesis.cites) <= tables


def test_the_first_drafts_of_a_search_fill_the_space_whichever_the_model_picks():
    """Before TPE has five results its draws are random and clump; the drafts offered come from the
    search's Sobol sequence instead: the first menu spans the learning-rate range (each in its own
    quarter of the log range), on the task's own recipe, and a later draft decision is offered the next
    points of the sequence."""
    import math

    from trex.events.search import NodeSelected
    from trex.propose.rules import draft_candidates
    from trex.propose.space import DIMS

    lr = DIMS["learning_rate"]
    tree = fold([SearchStarted(task=TASK, proposer="llm")])
    d0 = Decision(None, "draft", "mcts", 0, 0, "d0")
    first, _ = draft_candidates(tree, d0, task=TASK, steps=40, batch_size=16, data=DS)
    quarter = [int(4 * math.log(r.candidate.values["learning_rate"] / lr.low) / math.log(lr.high / lr.low))
               for r in first]
    assert len(first) == 3 and len(set(quarter)) == 3, quarter
    assert all("space-filling draft" in r.proposal.rationale for r in first)
    # on the task's own recipe: data edits are the evidence's to ask for, not drawn before any exists
    assert all({k: r.candidate.values[k] for k in DS.defaults()} == DS.defaults() for r in first)
    # the second draft decision of the search (the first one recorded before it) is offered the next
    # window of the sequence: drafts decided at once never share a point
    tree = fold([SearchStarted(task=TASK, proposer="llm"), NodeSelected(decision_id="d0", node_id=None,
                 operator="draft", policy="mcts", seed=0), NodeSelected(decision_id="d1", node_id=None,
                                                                          operator="draft", policy="mcts", seed=0)])
    second, _ = draft_candidates(tree, Decision(None, "draft", "mcts", 0, 1, "d1"), task=TASK, steps=40,
                                 batch_size=16, data=DS)
    lrs = lambda rs: [round(r.candidate.values["learning_rate"], 12) for r in rs]  # noqa: E731
    assert len(second) == 3 and not set(lrs(second)) & set(lrs(first))


# ------------------------------------------------------------------------------ an outside model
class Server:
    """An OpenAI-compatible server answering CandidateChoice requests from ``answers`` in turn."""

    def __init__(self, answers):
        self.answers, self.bodies = list(answers), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _send(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"data": [{"id": "outside-model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.bodies.append(req)
                text = outer.answers.pop(0) if len(outer.answers) > 1 else outer.answers[0]
                self._send({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 50, "completion_tokens": 8}})

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.httpd.shutdown()


@pytest.mark.slow
def test_an_outside_model_may_propose_its_own_edit_and_the_guard_still_refuses_test_data(arith_home):
    from trex.artifacts import ArtifactStore  # noqa: F401  (the store the Executor writes to)
    from trex.events import EventLog
    from trex.llm import OpenAIBackend
    from trex.train import Executor

    import copy

    own = copy.deepcopy(dict(plan(pool_addition=0.2)))
    own["data"]["sources"][0]["uri"] = f"task:{TASK}/test"  # the held-out split, dressed as training data
    answers = ['{"rationale": "replay per constraint_slack", "choice": 1}',  # the top-ranked: not asked again
               "lol", "lol", "lol",
               json.dumps({"rationale": "my own: train on the test rows", "choice": 0, "plan": own})]
    server = Server(answers)
    try:
        tree = forgetting_tree(llm=LlmSettings(url=server.url))
        results = []
        for i in range(3):
            rec = Recorder()
            client = LLMClient(OpenAIBackend(server.url, None), emit=rec, max_attempts=3)
            results.append((propose(tree, Decision("n1", "improve", "mcts", 0, i, f"d{i}"), home=arith_home,
                                    search_id="s", emit=rec, client=client), rec))
    finally:
        server.close()
    schemas = [b["response_format"]["json_schema"]["name"] for b in server.bodies]
    assert set(schemas) == {"CandidateChoice"}
    # the CandidateChoice an outside model sees offers 0, its own edit, with the full plan schema
    assert "plan" in server.bodies[0]["response_format"]["json_schema"]["schema"]["properties"]
    (valid, _), (junk, jrec), (mine, _) = results
    assert valid.rationale.startswith("chose 1 of") and valid.hypothesis.cites
    assert junk.rationale.startswith("LLM failed") and sum(isinstance(e, LlmCallFailed) for _, e in jrec.events) == 3
    assert mine.plan is not None and mine.rationale.startswith("own edit:")
    assert mine.plan.data.sources[0].uri == f"task:{TASK}/test"
    # the Executor refuses it before any training: one clear line, a failed trial, no adapter
    log = EventLog(arith_home)
    ex = Executor(arith_home, lambda ev: log.append("s", [ev]), search_id="s", threads=1)
    out = ex.run(mine.plan, task=TASK, node_id="n2")
    assert out.status == "failed" and out.reason == "bad_plan" and "only training splits" in out.message
    assert not any(e.type == "TrialFinished" for e in log.read("s"))


def test_the_no_tools_ablation_asks_the_model_without_evidence_and_records_no_tool_call(tmp_path):
    """``llm-notools``: the same model and schema, no evidence tools, no candidates, no trials table."""
    tree = fold([SearchStarted(task=TASK, constraints=CONS, proposer="llm-notools"), *node("n1", plan(), 0.6, 0.02)])
    assert tree.uses_llm
    model = Scripted(choice_of(tree, "n1", "more replay", pool_addition=0.3))
    prop, rec = ask(tree, IMPROVE, model, tmp_path)
    assert not [ev for _, ev in rec.events if isinstance(ev, ToolCalled)]
    (messages,) = model.seen
    prompt = "\n".join(m["content"] for m in messages)
    assert "Trials so far" not in prompt and "Candidate edits" not in prompt and "Improve node n1" in prompt
    assert not any(isinstance(ev, LlmCallFailed) for _, ev in rec.events)
    assert prop.plan is not None and prop.rationale == "more replay" and len(prop.plan.data.sources) == 2


def test_an_outside_models_own_edit_carries_its_own_hypothesis_citing_the_evidence(tmp_path):
    """With ``--llm-url`` the model's own edit states its own prediction (a named validation metric, a
    number) and the evidence it rests on, by tool name; the proposer turns those names into the ids of
    the recorded tool calls. Without one, or citing nothing recorded, the plan gets the template's and
    the rationale says so."""
    import copy

    tree = forgetting_tree(llm=LlmSettings(url="http://outside.invalid"))
    own = copy.deepcopy(dict(plan(pool_addition=0.35, learning_rate=0.004)))
    stated = {"text": "n1 forgets addition (0.02, constraint_slack): replay at 0.35 keeps it at 0.9 or more",
              "metric": "add_exact_match", "op": ">=", "threshold": 0.9, "cites": ["constraint_slack"]}
    mine, rec = ask(tree, IMPROVE, Scripted(json.dumps(
        {"rationale": "replay per constraint_slack", "choice": 0, "plan": own, "hypothesis": stated})), tmp_path)
    tools = rec.tool_ids()
    h = mine.hypothesis
    assert mine.rationale == "own edit: replay per constraint_slack"
    assert (h.text, h.metric, h.op, h.threshold) == (stated["text"], "add_exact_match", ">=", 0.9)
    assert len(h.cites) == 1 and tools[h.cites[0]].tool == "constraint_slack" and "constraint_slack:" in h.evidence
    # the schema offers only this task's validation metrics and the tools actually called
    model = Scripted(json.dumps({"rationale": "x", "choice": 0, "plan": own,
                                 "hypothesis": {**stated, "metric": "test_exact_match"}}),
                     json.dumps({"rationale": "no hypothesis", "choice": 0, "plan": own}))
    bare, rec = ask(tree, IMPROVE, model, tmp_path)
    assert sum(isinstance(e, LlmCallFailed) for _, e in rec.events) == 1  # the unknown metric was refused
    assert bare.rationale.endswith("(it stated no hypothesis citing the evidence: the template's)")
    assert bare.hypothesis is not None and bare.hypothesis.cites  # the template's, citing the tried plans
    assert rec.tool_ids()[bare.hypothesis.cites[0]].tool == "tried_plans"


def test_a_choice_that_follows_the_position_not_the_evidence_is_not_taken(tmp_path):
    """SmolLM2 answered "3 of 3" to most menus: the rules' last-ranked edit, every time. Asked again with
    the menu reversed, a model that picks by position names another candidate: the top-ranked is taken
    and the rationale says why; both calls are made."""
    tree = forgetting_tree()
    ranked = ranked_candidates(tree, tree.nodes["n1"], task=TASK, steps=tree.started.trial.steps,
                               batch_size=tree.started.trial.batch_size, data=DS)
    k = len(ranked)
    for pos in sorted({k, 2}):  # the last both times; the middle of three (reversing kept it) both times
        model = Scripted(f'{{"rationale": "this one", "choice": {pos}}}')  # the same position, both times
        prop, rec = ask(tree, IMPROVE, model, tmp_path)
        assert prop.plan == ranked[0].proposal.plan and len(model.seen) == 2
        assert prop.rationale.startswith(f"the LLM chose {pos} of {k}, but asked again with the menu rotated it "
                                         f"chose {pos} (= {pos % k + 1} above): its choice followed the position")


def test_a_choice_that_holds_once_but_not_a_third_time_is_not_taken(tmp_path):
    """With two candidates a model answering at random names the same one after one rotation half the
    time (the demos' SmolLM2 held to a weaker edit that way). Asked a third time, the menu rotated again,
    an answer naming another candidate sends the choice back to the top-ranked, and the rationale says so."""
    tree = forgetting_tree()
    ranked = ranked_candidates(tree, tree.nodes["n1"], task=TASK, steps=tree.started.trial.steps,
                               batch_size=tree.started.trial.batch_size, data=DS)
    k = len(ranked)
    third = (1 - 2) % k + 1  # where the chosen candidate (ranked[1]) stands in the third menu
    model = Scripted('{"rationale": "this one", "choice": 2}', '{"rationale": "this one", "choice": 1}',
                     f'{{"rationale": "this one", "choice": {third % k + 1}}}')  # another candidate
    prop, _ = ask(tree, IMPROVE, model, tmp_path)
    assert prop.plan == ranked[0].proposal.plan and len(model.seen) == 3
    assert prop.rationale.startswith(f"the LLM chose 2 of {k}, but asked a third time with the menu rotated again "
                                     f"it chose {third % k + 1}")


def test_a_choice_of_the_top_ranked_candidate_is_taken_without_asking_again(tmp_path):
    """Whatever the rotations found, the top-ranked would be taken: one call, and the rationale says so."""
    tree = forgetting_tree()
    ranked = ranked_candidates(tree, tree.nodes["n1"], task=TASK, steps=tree.started.trial.steps,
                               batch_size=tree.started.trial.batch_size, data=DS)
    model = Scripted('{"rationale": "replay per constraint_slack", "choice": 1}')
    prop, _ = ask(tree, IMPROVE, model, tmp_path)
    assert prop.plan == ranked[0].proposal.plan and len(model.seen) == 1
    assert prop.rationale.startswith(f"chose 1 of {len(ranked)}, the top-ranked (not asked again)")
