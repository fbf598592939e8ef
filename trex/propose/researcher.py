"""The Researcher's domain: turn a policy decision into a child plan, with its tools.

Three proposers write the same events (``PlanProposed`` / ``PlanRejected``): ``random`` and
``optuna`` (:mod:`trex.propose.baselines`) and ``llm``, the agent. The LLM proposer gathers its context
through tools — the task's data sources, the parent's bad cases (the Evaluator's per-example
outputs), the insights in force (this search's and earlier searches' on the task), and a
literature search where an endpoint is configured — each call a ``ToolCalled`` event, then asks
the model for a :class:`PlanChoice`: a compact, bounded choice of the values the search varies
(a small local model decodes it in seconds under a grammar; the full ``Plan`` schema is ~5k
characters). ``PlanChoice`` and the prompt's description of the values are derived from
:mod:`trex.propose.space`, and the choice is expanded into a full ``Plan`` by the same code as the
baselines, so every proposer explores the same space. The prompt states the ranges, never a
preferred region: a small model repeats any number it is shown as "usually best".

The hybrid (arXiv 2603.24647: an optimiser plus a small LLM beat both alone): for an ``improve`` the
structural choice is the LLM's, among the candidate edits the rules of :mod:`trex.propose.rules` draw
from the evidence tools (:mod:`trex.propose.evidence`), each with its hypothesis citing the tool
calls it rests on; with an outside model (``--llm-url``) it may answer a plan of its own instead.
Drafts and debugs are the LLM's choice of values, never a repeat of a tried plan (then the
optimiser's numbers). Junk from the model becomes ``LlmCallFailed`` events and the top-ranked
candidate (or the optimiser's plan) is taken, the rationale saying so: the search never stalls on
the model. ``emit(event, event_id=None)`` records what the proposer did (tool calls are cited by id).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from trex.propose import space
from trex.propose.baselines import PROPOSERS, Proposal, finish
from trex.propose.space import DEFAULT_TRIAL_STEPS, values_of

Emit = Callable[[Any], None]

PlanChoice = space.plan_choice_model()
"""What the LLM chooses (a rationale, every dimension of the space, continue_from_parent)."""


# ---------------------------------------------------------------------------------------- tools
def _tool(emit: Emit | None, name: str, args: dict, fn: Callable[[], str]) -> str:
    from trex.propose.evidence import call_tool

    return call_tool(emit, name, args, fn)[0]


def _data_source(t) -> str:
    if t.data is not None:
        return f"generator {t.data!r} (seed {t.data_seed})"
    return "files " + ", ".join(f"{k}={Path(v).name}" for k, v in sorted(t.data_files.items()))


def tool_task_data(task: str, home: str | os.PathLike | None = None) -> str:
    from trex.tasks import get_task

    t = get_task(task, home)
    def bound(m) -> str:
        return (f" (required >= {m.at_least:g})" if m.at_least is not None else "") + \
               (f" (required <= {m.at_most:g})" if m.at_most is not None else "")

    metrics = ", ".join(f"{m.name} on {m.split}{' (primary)' if m.primary else ''}{bound(m)}" for m in t.metrics)
    pools = "".join(f"\npool {p.name}: {p.description}" for p in t.pools)
    return (f"task {t.name}: {t.description}\ndata: {_data_source(t)}, splits "
            f"{', '.join(t.splits)}; prompt template {t.prompt_template!r}\nmetrics: {metrics}{pools}")


def tool_bad_cases(home: str | os.PathLike, node, n: int = 4) -> str:
    """The worst-scored examples of ``node``'s first primary-split evaluation (a fold field: ``node.outputs``)."""
    import pyarrow.parquet as pq

    from trex.artifacts import evaluation_outputs

    art = node.outputs[0] if node.outputs else None
    if art is None:
        return f"node {node.node_id} has no evaluation outputs"
    rows = pq.read_table(evaluation_outputs(home, art)).to_pylist()
    bad = sorted(rows, key=lambda r: r["score"])[:n]
    lines = [f"{sum(r['score'] for r in rows) / max(1, len(rows)):.3f} mean score over {len(rows)} examples; worst:"]
    for r in bad:
        lines.append(f"- input {r['input']!r} expected {r['reference']!r} got {r['output']!r}")
    return "\n".join(lines)


def tool_insights(tree, prior: Mapping[str, str]) -> str:
    items = [f"- {t}" for t in tree.insights.values()] + [f"- (earlier search) {t}" for t in prior.values()]
    return "\n".join(items) if items else "no insights yet"


def tool_literature(query: str, endpoint: str | None) -> str:
    if not endpoint:
        return "no literature/web search endpoint is configured (set search config 'search_url'): nothing searched"
    import urllib.parse
    import urllib.request

    url = f"{endpoint}?{urllib.parse.urlencode({'q': query})}"
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - a URL the user configured
        return r.read(4000).decode(errors="replace")


# ------------------------------------------------------------------------------- the prompt
def _value(x: Any) -> str:
    return f"{x:.2g}" if isinstance(x, float) else str(x)


def _node_line(n, data=None) -> str:
    v = values_of(n.plan, int(n.plan.get("max_steps") or 0), data)
    score = f"{n.score:.3f}" if n.score is not None else (f"failed: {n.failure}" if n.failure else n.status)
    if getattr(n, "infeasible", None):
        score += f" (infeasible: {n.infeasible})"
    cont = " continued" if n.plan.get("continue_from_parent") else ""
    dims = list(space.SPACE) + (list(data.dims) if data is not None else [])
    values = ", ".join(f"{d.name} {_value(v[d.name])}" for d in dims)
    if data is not None and v.get("clean_node"):
        values += f", clean_node {v['clean_node']}"
    return f"{n.node_id} (parent {n.parent_id or 'root'}{cont}): {values} -> {score}"


def system_prompt(data=None) -> str:
    """The researcher's role and the values it chooses: ranges only, no preferred region."""
    values = space.describe() + ("\n" + data.describe() if data is not None else "")
    return ("You are a careful ML researcher tuning LoRA fine-tuning runs of short length: the training values "
            f"and the training data. You choose these values:\n{values}\nBuild on the best nodes and the "
            "insights, and explore where the trials so far say little; justify the choice in one short sentence "
            "citing node ids.")


def build_messages(tree, decision, task_text: str, insights_text: str, bad_cases: str | None,
                   base: float | None, data=None, evidence: bool = True) -> list[dict[str, str]]:
    """The PlanChoice prompt; ``evidence=False`` (the no-tools ablation) leaves out the trials so far,
    the insights and the bad cases."""
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    scored = sorted((n for n in tree.nodes.values() if n.score is not None), key=lambda n: -(n.score or 0)
                    if tree.higher_is_better else (n.score or 0))
    failed = [n for n in tree.nodes.values() if n.status == "failed"]
    lines = [n for n in scored[:6]] + failed[:3]
    history = "\n".join(_node_line(n, data) for n in lines) or "no trials yet"
    if decision.operator == "draft" or parent is None:
        ask = "Propose a new LoRA plan (a draft) that explores a promising region not tried yet."
    elif decision.operator == "debug":
        ask = (f"Node {parent.node_id} failed ({parent.failure}: {parent.failure_message[:200]}). "
               f"Propose a fix of its plan: {_node_line(parent, data)}")
    else:
        ask = f"Improve node {parent.node_id}: {_node_line(parent, data)}. Change one or two values."
    user = (f"{task_text}\n\nBase model score: {base if base is not None else 'unknown'} "
            f"({'higher' if tree.higher_is_better else 'lower'} is better).\n")
    if evidence:
        user += f"Trials so far (best first):\n{history}\n\nInsights:\n{insights_text}\n"
    if bad_cases and evidence:
        user += f"\nWorst cases of {parent.node_id if parent else 'the parent'}:\n{bad_cases}\n"
    user += f"\n{ask}\nAnswer with the JSON object only."
    return [{"role": "system", "content": system_prompt(data)}, {"role": "user", "content": user}]


# ------------------------------------------------------------------------------ proposers
def propose_llm(tree, decision, *, task: str, steps: int, batch_size: int, client, home, search_id: str,
                emit: Emit | None, prior_insights: Mapping[str, str], base: float | None,
                search_url: str | None = None, data=None, tools: bool = True) -> Proposal:
    """The hybrid (see the module docstring). ``tools=False`` is the ablation "LLM without tools"
    (proposer ``llm-notools``): no evidence, no candidates, no insights — the model sees the task, the
    space and, for an improve or a debug, the parent's plan, and chooses every value itself (a repeat
    of a tried plan is still replaced by the optimiser's numbers: that is a rule of the search, not a tool)."""
    if not tools:
        emit = None  # nothing is looked up, so nothing is recorded as a tool call
    task_text = (_tool(emit, "task_data", {"task": task}, lambda: tool_task_data(task, home)) if tools
                 else _safe(lambda: tool_task_data(task, home)))
    if not tools:
        return _propose_values(tree, decision, task=task, steps=steps, batch_size=batch_size, client=client,
                               emit=None, base=base, data=data, task_text=task_text, insights_text="",
                               bad=None, evidence=False)
    insights_text = _tool(emit, "read_insights", {}, lambda: tool_insights(tree, prior_insights))
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    if decision.operator == "improve" and parent is not None and parent.plan:
        from trex.propose.rules import gather_evidence, ranked_candidates

        ev, formats = gather_evidence(tree, parent, home=home, data=data, emit=emit)
        ranked = ranked_candidates(tree, parent, task=task, steps=steps, batch_size=batch_size, data=data,
                                   evidence=ev, decision=decision, formats=formats)
        if ranked:
            return choose_candidate(tree, decision, ranked, client, task_text, insights_text,
                                    {k: v[0] for k, v in ev.items()}, base, data,
                                    own_edit=bool(tree.started.llm.url), task=task, steps=steps,
                                    batch_size=batch_size, evidence_ids={k: v[1] for k, v in ev.items()}, emit=emit)
    if decision.operator == "draft" and search_url is not None or not tree.nodes:
        _tool(emit, "literature_search", {"query": f"LoRA hyperparameters {task}"},
              lambda: tool_literature(f"LoRA hyperparameters {task}", search_url))
    if decision.operator == "draft" or parent is None:
        from trex.propose.rules import draft_candidates

        drafts, table = draft_candidates(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data,
                                         emit=emit)
        if drafts:
            cites = drafts[0].proposal.hypothesis.cites if drafts[0].proposal.hypothesis else ()
            return choose_candidate(tree, decision, drafts, client, task_text, insights_text,
                                    {"tried_plans": table}, base, data, own_edit=bool(tree.started.llm.url),
                                    task=task, steps=steps, batch_size=batch_size,
                                    evidence_ids={"tried_plans": cites[0] if cites else None}, emit=emit)
    bad = None
    if parent is not None and parent.score is not None:
        bad = _tool(emit, "bad_cases", {"node_id": parent.node_id},
                    lambda: tool_bad_cases(home, parent))
    return _propose_values(tree, decision, task=task, steps=steps, batch_size=batch_size, client=client, emit=emit,
                           base=base, data=data, task_text=task_text, insights_text=insights_text, bad=bad,
                           evidence=True)


def _safe(fn) -> str:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the task text is context; its failure is said in the prompt
        return f"{type(e).__name__}: {e}"


def _propose_values(tree, decision, *, task, steps, batch_size, client, emit, base, data, task_text: str,
                    insights_text: str, bad: str | None, evidence: bool) -> Proposal:
    """The model's PlanChoice over the whole space (a draft, a debug, or an improve no rule could make
    new), never a repeat of a tried plan; the optimiser's plan when the model fails."""
    from trex.llm.types import LLMError

    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    if data is not None:  # cleaning is offered once a node has an adapter to score rows with
        from trex.propose.data_space import cleanable_node

        data = replace(data, cleaning=cleanable_node(tree, parent) is not None)
    messages = build_messages(tree, decision, task_text, insights_text, bad, base, data, evidence=evidence)
    seed = int.from_bytes(decision.decision_id.encode()[:4], "big") % (2**31)
    try:
        # sampled (seeded by the decision): greedy decoding would give every draft the same plan
        res = client.chat(messages, schema=space.plan_choice_model(data), purpose="propose",
                          max_tokens=192 if data is None else 320,
                          temperature=tree.started.llm.temperature, seed=seed)
    except LLMError as e:  # the failed calls are LlmCallFailed events; the optimiser answers instead
        from trex.propose.rules import fresh_numbers

        alt = fresh_numbers(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data, emit=emit)
        if alt.plan is None:
            return Proposal(None, str(getattr(e, "last_text", "") or ""), "", rejection=f"LLM: {e}"[:2000])
        return replace(alt, rationale=f"LLM failed ({str(e)[:200]}): the optimiser's plan. {alt.rationale}")
    choice = res.parsed
    values = choice.model_dump()
    rationale = values.pop("rationale")
    if data is not None and float(values.get("clean_fraction") or 0) > 0 and not values.get("clean_node"):
        from trex.propose.data_space import cleanable_node

        values["clean_node"] = cleanable_node(tree, parent)  # unnamed: the parent's (or the best) adapter
    if values.get("continue_from_parent"):
        if parent is None or not parent.adapter:
            values["continue_from_parent"] = False
        else:  # the checkpoint fixes rank and modules
            pv = values_of(parent.plan, steps)
            values.update(lora_rank=pv["lora_rank"], targets=pv["targets"],
                          max_steps=max(1, int(pv["max_steps"]) // 2))
    prop = finish(task, steps, batch_size, values, rationale, data, tree)
    return _never_a_repeat(tree, decision, prop, task=task, steps=steps, batch_size=batch_size, data=data,
                           emit=emit)


def _never_a_repeat(tree, decision, prop: Proposal, *, task, steps, batch_size, data, emit) -> Proposal:
    """The LLM's own plan, unless it repeats one already tried (same structure, numbers within a grid
    step): then the optimiser's numbers instead, and the rationale says so. Either way the plan states
    a hypothesis: the model's own (an outside model's edit), or that it beats the best so far, citing
    the tried-plans table."""
    from trex.propose import evidence as tools
    from trex.propose.rules import _values, beats_best, fresh_numbers, signature, tried

    if prop.plan is None:
        return prop
    got = _values(prop, steps, data, decision.node_id)
    if got is not None and signature(got) in tried(tree, steps, data):
        alt = fresh_numbers(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data, emit=emit)
        return replace(alt, rationale=f"the LLM's plan repeated a tried plan ({prop.rationale[:200]!r}); "
                                      f"{alt.rationale}")
    if prop.hypothesis is not None:  # the outside model's own, checked against the evidence it cites
        return prop
    table, eid = tools.call_tool(emit, "tried_plans", {}, lambda: tools.tried_plans(tree, steps, data))
    return replace(prop, hypothesis=beats_best(tree, table, eid))


def candidate_choice_model(k: int, own_edit: bool, metrics: tuple[str, ...] = (), tools: tuple[str, ...] = ()):
    """What the LLM answers when it chooses among ``k`` candidate edits: a one-line reason and a number
    (1..k); with ``own_edit`` (a capable outside model) also 0 with a plan of its own (the full schema)
    and, given ``metrics`` and ``tools``, the hypothesis of that plan: a prediction on one of the named
    validation ``metrics`` and the evidence ``tools`` (by name) it rests on."""
    from typing import Literal, Optional

    from pydantic import ConfigDict, Field, create_model

    from trex.plan import Plan

    options = tuple(range(0 if own_edit else 1, k + 1))
    fields = {"rationale": (str, Field(max_length=300)), "choice": (Literal[options], ...)}  # type: ignore[valid-type]
    if own_edit:
        fields["plan"] = (Optional[Plan], None)
        if metrics and tools:
            own = create_model(
                "OwnHypothesis", __config__=ConfigDict(extra="forbid"),
                text=(str, Field(min_length=1, max_length=300)),
                metric=(Literal[tuple(metrics)], ...),  # type: ignore[valid-type]
                op=(Literal[">=", ">", "<=", "<"], ...),
                threshold=(float, Field(allow_inf_nan=False)),
                cites=(tuple[Literal[tuple(tools)], ...], Field(min_length=1, max_length=len(tools))))  # type: ignore[valid-type]
            fields["hypothesis"] = (Optional[own], None)
    return create_model("CandidateChoice", __config__=ConfigDict(extra="forbid"), **fields)


def val_metrics(tree) -> tuple[str, ...]:
    """The validation metrics a hypothesis may name: the primary one, the constraints', those scored."""
    from trex.propose.rules import primary_metric

    names = [primary_metric(tree)] + [c.metric for c in tree.started.constraints]
    for n in tree.nodes.values():
        names.extend(dict(n.metrics))
    return tuple(dict.fromkeys(x for x in names if x))


def _own_hypothesis(answer, evidence: Mapping[str, str], evidence_ids: Mapping[str, str | None]):
    """The outside model's hypothesis of its own plan, citing the recorded tool calls it names; None when
    it gave none (then its plan gets the template's, and the rationale says so)."""
    from trex.propose.baselines import Hypothesis

    h = getattr(answer, "hypothesis", None)
    if h is None:
        return None
    cites = tuple(dict.fromkeys(evidence_ids[t] for t in h.cites if evidence_ids.get(t)))
    if not cites:
        return None
    words = "; ".join(f"{t}: {evidence[t].splitlines()[0][:150]}" for t in dict.fromkeys(h.cites) if t in evidence)
    return Hypothesis(h.text, h.metric, h.op, float(h.threshold), words[:2000], cites)


def choose_candidate(tree, decision, ranked, client, task_text: str, insights_text: str, evidence: Mapping[str, str],
                     base, data, *, own_edit: bool, task: str, steps: int, batch_size: int,
                     evidence_ids: Mapping[str, str | None] | None = None, emit: Emit | None = None) -> Proposal:
    """The hybrid step: the LLM picks one of the rules' candidate edits (the numbers are the rules' /
    the optimiser's), or with ``own_edit`` proposes a plan of its own. When the model fails or answers
    junk, the top-ranked candidate is taken and the rationale records it (the failed calls are
    ``LlmCallFailed`` events): the search never stalls on the model.

    A choice counts only if it survives reordering: the model is asked again with the menu rotated by
    one (no candidate keeps its number) and by two, and where the answers name different candidates its
    choice followed the position (or chance), not the evidence (small models pick by position: SmolLM2 answered "3 of 3" to most menus, always the
    rules' last-ranked edit), so the top-ranked candidate is taken and the rationale says so (the
    positional bias of multiple-choice answers, Zheng et al. 2023, arXiv 2309.03882)."""
    from trex.llm.types import LLMError

    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    top = ranked[0].proposal
    ids = {k: v for k, v in (evidence_ids or {}).items() if v}
    schema = candidate_choice_model(len(ranked), own_edit, val_metrics(tree), tuple(ids))
    seed = int.from_bytes(decision.decision_id.encode()[:4], "big") % (2**31)

    def ask(order, attempt: int):
        messages = _choice_messages(tree, parent, order, task_text, insights_text, evidence, base, data, own_edit)
        return client.chat(messages, schema=schema, purpose="choose", max_tokens=96 if not own_edit else 2048,
                           temperature=tree.started.llm.temperature, seed=seed + attempt).parsed

    what = "the top-ranked candidate" if parent is not None else "the optimiser's first draft"
    try:
        answer = ask(ranked, 0)
    except LLMError as e:
        return replace(top, rationale=f"LLM failed ({str(e)[:200]}): took {what}. {top.rationale}")
    if answer.choice == 0:
        if answer.plan is None:
            return replace(top, rationale=f"the LLM chose its own edit but gave no plan: took the top-ranked "
                                          f"candidate. {top.rationale}")
        mine = _own_hypothesis(answer, evidence, ids)
        note = "" if mine is not None else " (it stated no hypothesis citing the evidence: the template's)"
        own_prop = Proposal(answer.plan, answer.model_dump_json()[:4000], f"own edit: {answer.rationale}{note}",
                            hypothesis=mine)
        return _never_a_repeat(tree, decision, own_prop, task=task, steps=steps, batch_size=batch_size,
                               data=data, emit=emit)
    chosen = ranked[answer.choice - 1]
    if len(ranked) == 1:
        return replace(chosen.proposal, rationale=f"the only candidate: {answer.rationale} | "
                                                  f"{chosen.proposal.rationale}")
    if chosen is ranked[0]:  # whatever the checks below found, the top-ranked would be taken: no more calls
        return replace(chosen.proposal, rationale=f"chose 1 of {len(ranked)}, the top-ranked (not asked again): "
                                                  f"{answer.rationale} | {chosen.proposal.rationale}")
    # rotated by one, no candidate keeps its number (reversed, the middle of three would: a model that
    # always answers 2 would pass); then by two (a menu of two: its first order again, another seed). A
    # model that picks by position fails the first; one that picks at random survives both with chance
    # 1/n² (a quarter for two candidates) where one rotation let it through half the time (the demos'
    # SmolLM2 twice held to a second stage over continuing a node still learning, and to continuing 256
    # memorised rows over more rows: each scored below the top-ranked edit)
    for turn, how in ((1, "asked again with the menu rotated"), (2, "asked a third time with the menu rotated again")):
        k = turn % len(ranked)
        order = ranked[k:] + ranked[:k]
        try:
            again = ask(order, turn)
            second = order[again.choice - 1] if again.choice else None
        except LLMError as e:
            return replace(top, rationale=f"the LLM chose {answer.choice} of {len(ranked)}, but {how}, it failed "
                                          f"({str(e)[:120]}): its choice is unchecked; took {what}. {top.rationale}")
        if second is not chosen:
            why = (f"{how} it chose "
                   + (f"{again.choice} (= {ranked.index(second) + 1} above)" if second is not None else "its own plan"))
            return replace(top, rationale=f"the LLM chose {answer.choice} of {len(ranked)}, but {why}: its choice "
                                          f"followed the position, not the evidence; took {what}. {top.rationale}")
    return replace(chosen.proposal, rationale=f"chose {answer.choice} of {len(ranked)} (and again with the menu "
                                              f"rotated twice): {answer.rationale} | {chosen.proposal.rationale}")


def _choice_messages(tree, parent, order, task_text: str, insights_text: str, evidence: Mapping[str, str], base,
                     data, own_edit: bool) -> list[dict[str, str]]:
    """The CandidateChoice prompt with the menu in ``order`` (numbered from 1)."""
    facts = "\n".join(f"{k}: {v[:500]}" for k, v in evidence.items())
    base_line = (f"Base model score: {base if base is not None else 'unknown'} "
                 f"({'higher' if tree.higher_is_better else 'lower'} is better).\n")
    if parent is None:  # a draft: the optimiser's points, described by their values
        menu = "\n".join(f"{i}. {_values_line(r.candidate.values, data)}" for i, r in enumerate(order, 1))
        own = ("\n0. a plan of your own: give it as `plan` (the full plan schema)" + OWN_HYPOTHESIS) if own_edit else ""
        user = (f"{task_text}\n\n{base_line}Evidence:\n{facts}\n\nInsights:\n{insights_text[:800]}\n\n"
                f"New plans (drafts) the optimiser suggests, none tried yet:\n{menu}{own}\n\n"
                "Choose the draft the evidence and insights say is most promising, or the one that explores where "
                "the trials so far say least; give the reason in one short sentence. Answer with the JSON object "
                "only.")
        system = ("You are a careful ML researcher tuning LoRA fine-tuning runs. You choose which new plan to "
                  "try next, from evidence.")
    else:
        menu = "\n".join(f"{i}. {r.candidate.edit}: {r.candidate.hypothesis}" for i, r in enumerate(order, 1))
        own = ("\n0. an edit of your own: give it as `plan` (the full plan schema)" + OWN_HYPOTHESIS) if own_edit else ""
        user = (f"{task_text}\n\n{base_line}"
                f"Evidence on {parent.node_id}:\n{facts}\n\nInsights:\n{insights_text[:800]}\n\n"
                f"Candidate edits of {parent.node_id}:\n{menu}{own}\n\n"
                "Choose the edit the evidence supports best; give the reason in one short sentence citing the "
                "evidence. Answer with the JSON object only.")
        system = ("You are a careful ML researcher improving a LoRA fine-tuning run. You choose which edit of a "
                  "trained node to try next, from evidence.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


OWN_HYPOTHESIS = (" and its `hypothesis`: `text`, a prediction on one validation `metric` (`op`, `threshold`) "
                  "and `cites`, the evidence above it rests on (by name)")


def _values_line(values: Mapping[str, Any], data=None) -> str:
    """A plan's values in one line, for a menu: ``lr 0.0042, rank 8, targets qv, ...``."""
    dims = list(space.SPACE) + (list(data.dims) if data is not None else [])
    out = [f"{d.name} {_value(values[d.name])}" for d in dims if d.name in values]
    return ", ".join(out)


def propose(tree, decision, *, home, search_id: str, emit: Emit | None = None, client=None,
            prior_insights: Mapping[str, str] | None = None, base: float | None = None) -> Proposal:
    """The Researcher's one entry point: any proposer, from the search's own config."""
    steps, batch = tree.started.trial.steps, tree.started.trial.batch_size
    data = data_space_of(tree.task, home)
    if tree.uses_llm:
        if client is None:
            raise ValueError(f"the {tree.proposer} proposer needs an LLM client")
        return propose_llm(tree, decision, task=tree.task, steps=steps, batch_size=batch, client=client, home=home,
                           search_id=search_id, emit=emit, prior_insights=prior_insights or {}, base=base,
                           search_url=tree.started.search_url, data=data, tools=tree.proposer == "llm")
    from trex.propose.rules import propose_rules

    if tree.proposer == "rules":
        return propose_rules(tree, decision, task=tree.task, steps=steps, batch_size=batch, data=data, home=home,
                             emit=emit)
    fn = PROPOSERS.get(tree.proposer)
    if fn is None:
        raise ValueError(f"unknown proposer {tree.proposer!r} (known: llm, llm-notools, rules, "
                         f"{', '.join(PROPOSERS)})")
    return fn(tree, decision, task=tree.task, steps=steps, batch_size=batch, data=data)


def data_space_of(task: str, home):
    """The task's data space (its pools, templates, kind), or None where the task cannot be looked up
    (the proposers then vary training values only)."""
    from trex.propose.data_space import DataSpace
    from trex.tasks import get_task

    try:
        return DataSpace.for_task(get_task(task, home))
    except Exception:  # noqa: BLE001 - an unknown task fails where it is trained, with its own message
        return None


def make_client(llm, home, emit: Emit | None):
    """The LLM client a search's :class:`~trex.events.search.LlmSettings` ask for: an OpenAI-compatible
    URL, a local folder, or the embedded SmolLM2."""
    from trex.llm import LLMClient

    threads = llm.threads or 1
    if llm.url:
        from trex.llm import OpenAIBackend

        backend = OpenAIBackend(llm.url, llm.model)
    elif llm.model_dir:
        from trex.llm import TransformersBackend

        backend = TransformersBackend(llm.model_dir, threads=threads)
    else:
        from trex.llm import default_backend

        backend = default_backend(home, threads=threads)
    return LLMClient(backend, emit=emit, home=home, max_attempts=llm.max_attempts,
                     max_total_tokens=llm.max_total_tokens)


def prior_insights(log, task: str, exclude: str) -> dict[str, str]:
    """Insights in force from earlier searches on ``task``, each prefixed with its source (from the
    home's insight index, :mod:`trex.search.insight_index`)."""
    from trex.search.insight_index import InsightIndex, prior_insights as in_force, refresh

    return in_force(refresh(InsightIndex(), log), task, exclude)


__all__ = ["PlanChoice", "build_messages", "system_prompt", "make_client", "prior_insights", "propose", "propose_llm",
           "tool_bad_cases", "tool_task_data"]
