"""``ftbench report``: what a benchmark run says, read from the event log through DuckDB.

Per task: the base model's score, each proposer's best score over seeds (median and spread),
the trials and the training compute each needed to get within 90% of the best known result,
and plots of best-so-far against trials, compute-seconds and wall-clock seconds (median line, min–max band
over seeds, the base model as a dashed line).

"90% of the best known" is measured on the gain over the base model: a search reaches it when
its best-so-far is at least ``base + 0.9 * (best_known - base)`` (mirrored for a metric to
minimise). A plain ``0.9 * best_known`` would count the base model itself as a success on a task
where it already scores within 10% of the best (orders' base model gets 0.21 of 1.0 for free).

``load()`` returns plain rows, ``summarise()`` the numbers, ``write_report()`` the files; only the
latter imports matplotlib (headless).
"""
from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

CELLS_SQL = """
SELECT e.search_id,
       -- the cell's coordinates: SearchStarted v2 labels, or v1's config.ftbench (the committed baseline)
       coalesce(json_extract_string(e.payload, '$.labels.ftbench_task'),
                json_extract_string(e.payload, '$.config.ftbench.task')) AS task,
       coalesce(json_extract_string(e.payload, '$.labels.ftbench_proposer'),
                json_extract_string(e.payload, '$.config.ftbench.proposer')) AS proposer,
       TRY_CAST(coalesce(json_extract_string(e.payload, '$.labels.ftbench_seed'),
                         json_extract_string(e.payload, '$.config.ftbench.seed')) AS INTEGER) AS seed,
       e.schema_version, e.payload,
       TRY_CAST(json_extract_string(e.payload, '$.budget.max_trials') AS INTEGER) AS budget_trials,
       TRY_CAST(json_extract_string(e.payload, '$.parallel') AS INTEGER) AS parallel,
       g.recorded_at AS started_at,  -- its first event after SearchStarted (cells are all started up front)
       f.recorded_at AS finished_at,
       json_extract_string(f.payload, '$.reason') AS finish_reason
FROM events e
LEFT JOIN (SELECT search_id, arg_max(recorded_at, seq) AS recorded_at, arg_max(payload, seq) AS payload
           FROM events WHERE type = 'SearchFinished' GROUP BY search_id) f USING (search_id)
LEFT JOIN (SELECT search_id, arg_min(recorded_at, seq) AS recorded_at FROM events WHERE seq > 1
           GROUP BY search_id) g USING (search_id)
WHERE e.type = 'SearchStarted' AND coalesce(json_extract_string(e.payload, '$.labels.ftbench_tag'),
                                            json_extract_string(e.payload, '$.config.ftbench.tag')) = ?
ORDER BY task, proposer, seed
"""

# held-out test scores (primary metric): the node each search chose on validation (rank 1), with its
# outputs, and the val-best nodes after 5 and 10 trials (``anytime``), for the anytime curve
TEST_SQL = """
SELECT search_id, json_extract_string(payload, '$.node_id') AS node_id,
       TRY_CAST(json_extract_string(payload, '$.value') AS DOUBLE) AS value,
       json_extract_string(payload, '$.outputs_artifact') AS outputs,
       TRY_CAST(json_extract_string(payload, '$.rank') AS INTEGER) AS rank,
       json_extract(payload, '$.anytime') AS anytime
FROM events WHERE type = 'HeldOutScored' AND TRY_CAST(json_extract_string(payload, '$.primary') AS BOOLEAN)
"""

BASE_SQL = """
SELECT search_id, arg_max(value, seq) AS base_score FROM metrics
WHERE node_id = 'base' AND "primary" GROUP BY search_id
"""

# every trial the budget paid for, in the order it closed, with its node's primary score and when that
# score was first recorded (the wall-clock axis: proposing, the LLM's time included, training and
# evaluating all count). An abandoned
# attempt (its executor died; the node was retried) has no score of its own. A trial served from the
# cache (TrialReused) costs nothing when the work was done in the same search, and is charged the
# source trial's compute when it was done in another: benchmark cells are independent samples.
TRIALS_SQL = """
WITH finished AS (
    SELECT search_id, node_id, max(compute_seconds) AS compute_s FROM trials
    WHERE last_event = 'TrialFinished' GROUP BY search_id, node_id
),
reused AS (
    SELECT search_id, seq, json_extract_string(payload, '$.node_id') AS node_id,
           json_extract_string(payload, '$.source_search_id') AS src_search,
           json_extract_string(payload, '$.source_node_id') AS src_node
    FROM events WHERE type = 'TrialReused'
),
t AS (
    SELECT search_id, node_id, closed_seq, coalesce(compute_seconds, 0) AS compute_s, last_event FROM trials
    WHERE closed_seq IS NOT NULL
    UNION ALL
    SELECT r.search_id, r.node_id, r.seq,
           CASE WHEN r.src_search = r.search_id THEN 0.0 ELSE coalesce(f.compute_s, 0.0) END, 'TrialReused'
    FROM reused r LEFT JOIN finished f ON f.search_id = r.src_search AND f.node_id = r.src_node
)
SELECT t.search_id, t.compute_s, CASE WHEN t.last_event = 'TrialAbandoned' THEN NULL ELSE n.score END AS score,
       t.node_id, CASE WHEN t.last_event = 'TrialAbandoned' THEN NULL ELSE m.scored_at END AS scored_at
FROM t LEFT JOIN nodes n USING (search_id, node_id)
LEFT JOIN (SELECT search_id, node_id, arg_max(recorded_at, seq) AS scored_at FROM metrics  -- the score nodes holds
           WHERE "primary" AND node_id <> 'base' GROUP BY search_id, node_id) m USING (search_id, node_id)
ORDER BY t.search_id, t.closed_seq
"""

# each node's secondary metrics (its last value of each): what a constrained task judges it by
NODE_METRICS_SQL = """
SELECT search_id, node_id, name, arg_max(value, seq) AS value FROM metrics
WHERE NOT "primary" GROUP BY search_id, node_id, name
"""


@dataclass
class CellRun:
    search_id: str
    task: str
    proposer: str
    seed: int
    started: "SearchStarted"  # noqa: F821 - its typed settings (trex.events.search)
    budget_trials: int | None
    wall_s: float | None
    finished: bool
    base: float | None
    scores: list = field(default_factory=list)  # per closed trial: score, or None (failed, or infeasible; validation)
    compute: list = field(default_factory=list)  # per closed trial: training seconds
    wall: list = field(default_factory=list)  # per closed trial: seconds from the search's start to its score
    started_at: float | None = None  # when the search began: its first event after SearchStarted (the cells
    # of a run are all started up front); a resumed search's wall-clock includes its time stopped
    test: float | None = None  # the held-out test score of the node chosen on validation
    test_ci: tuple | None = None  # its 95% bootstrap interval over the test examples
    test_at: dict = field(default_factory=dict)  # trials -> test score of the val-best node after them


def _ts(s: str | None) -> float | None:
    return None if s is None else datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()


def bad_cell_labels(task, proposer, seed) -> str | None:
    """Why a search's ftbench labels (free text in its SearchStarted, e.g. from an imported log) are not a
    benchmark cell's, or None. The task label becomes part of a plot's file name, so it must be a task
    name (:data:`trex.tasks.model.NAME_PATTERN`: no '/', no '..'); the proposer is a name too, the seed a
    number."""
    import re

    from trex.tasks.model import NAME_PATTERN

    for what, value in (("task", task), ("proposer", proposer)):
        if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
            return (f"its ftbench {what} label {str(value)[:80]!r} is not a name (lowercase letters, digits, "
                    "'.', '_', '-')")
    if not isinstance(seed, int):
        return "its ftbench seed label is not a whole number"
    return None


def _warn(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def load(home: str | Path, tag: str, warn=_warn) -> list[CellRun]:
    """Every search of the benchmark run ``tag`` in ``home``, with its trials in closing order.

    The labels that place a search in the benchmark (task, proposer, seed) are read from the log, where
    anything a user imported may stand: a search whose labels are not names (:func:`bad_cell_labels`; a
    task label like ``../../x`` would make a plot's file name a path outside the report folder) is left
    out of the report with one ``warn`` line naming it, and the rest of the run is reported. Skipping,
    not refusing the whole report: the log is append-only, so one crafted search imported into a home
    would otherwise keep the run's report from ever being written."""
    from trex.search.views import connect  # the log's views and the tree's (nodes)

    con = connect(home)
    try:
        cells = con.execute(CELLS_SQL, [tag]).fetchall()
        base = dict(con.execute(BASE_SQL).fetchall())
        trials = con.execute(TRIALS_SQL).fetchall()
        tests = con.execute(TEST_SQL).fetchall()
        node_metrics: dict = {}
        for sid, nid, name, value in con.execute(NODE_METRICS_SQL).fetchall():
            node_metrics.setdefault((sid, nid), {})[name] = value
    finally:
        con.close()
    out: dict[str, CellRun] = {}
    from trex.events.base import upcast
    from trex.events.search import SearchStarted

    for sid, task, proposer, seed, version, payload, budget, _parallel, started, finished, _reason in cells:
        why = bad_cell_labels(task, proposer, seed)
        if why is not None:
            warn(f"warning: search {str(sid)[:80]!r} left out of the report: {why}")
            continue
        t0, t1 = _ts(started), _ts(finished)
        first = SearchStarted(**upcast("SearchStarted", int(version), json.loads(payload)))
        out[sid] = CellRun(sid, task, proposer, int(seed), first, budget,
                           None if t1 is None or t0 is None else t1 - t0, finished is not None, base.get(sid),
                           started_at=t0)
    for sid, compute_s, score, nid, scored_at in trials:
        if sid in out:
            cons = out[sid].started.constraints
            if score is not None and cons and any(c.violation(node_metrics.get((sid, nid), {}).get(c.metric))
                                                  for c in cons):
                score = None  # infeasible: outside the task's constraints, never a best (so "none" can be the answer)
            out[sid].scores.append(None if score is None else float(score))
            out[sid].compute.append(float(compute_s))
            t, t0 = _ts(scored_at), out[sid].started_at
            out[sid].wall.append(None if score is None or t is None or t0 is None else round(t - t0, 3))
    for sid, _node, value, outputs, rank, anytime in tests:
        if sid not in out:
            continue
        if rank == 1:
            out[sid].test = float(value)
            path = _outputs_path(home, outputs) if outputs else None
            out[sid].test_ci = bootstrap_ci(path) if path is not None else None
        for t in json.loads(anytime) if isinstance(anytime, str) else (anytime or []):
            out[sid].test_at[int(t)] = float(value)
    return list(out.values())


def _outputs_path(home, rel: str) -> Path | None:
    """An evaluation's outputs file: the home's, else the copy its evaluator's node published; None when
    there is none, or when ``rel`` (read from the log) is not an outputs artifact's name — it is never
    made a path (an imported "../../x" would have been read, a pipe there would have hung the report)."""
    from trex.artifacts import evaluation_outputs

    try:
        return evaluation_outputs(home, rel)
    except Exception:  # noqa: BLE001 - not an outputs name, not here, not in the store: no interval
        return None


def bootstrap_ci(outputs_path: Path, n: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of a score over the examples of one evaluation (its outputs
    artifact's per-example ``score`` column): a test split of a few hundred rows is noisy."""
    import numpy as np
    import pyarrow.parquet as pq

    try:
        scores = np.asarray(pq.read_table(outputs_path, columns=["score"]).column("score").to_pylist(), dtype=float)
    except (OSError, KeyError, ValueError):
        return None
    if scores.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, scores.size, size=(n, scores.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def best_so_far(scores: list, direction: str = "max", start: float | None = None) -> list:
    """Running best after each trial, starting from ``start`` (None until the first scored trial)."""
    pick = max if direction == "max" else min
    out, best = [], start
    for s in scores:
        if s is not None:
            best = s if best is None else pick(best, s)
        out.append(best)
    return out


def reach(scores: list, compute: list, threshold: float, direction: str = "max") -> tuple[int | None, float | None]:
    """(trials, compute-seconds) at which the best-so-far first reaches ``threshold``; None if never."""
    spent = 0.0
    for i, (s, c) in enumerate(zip(scores, compute), 1):
        spent += c
        if s is not None and (s >= threshold if direction == "max" else s <= threshold):
            return i, spent
    return None, None


def reach_wall(scores: list, wall: list, threshold: float, direction: str = "max") -> float | None:
    """Seconds from the search's start until a score reaching ``threshold`` was recorded; None if never."""
    times = [t for s, t in zip(scores, wall) if s is not None and t is not None
             and (s >= threshold if direction == "max" else s <= threshold)]
    return min(times) if times else None


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _median_of_seeds(xs, direction: str = "max"):
    """The median over seeds of a search's outcome, where a seed without one (no feasible node: the search
    hands back nothing better than the base model) ranks below every score rather than dropping out: the
    median of (0.795, none, 0.07) is 0.07, not 0.43, and of (none, none, 0.055) none: none whenever the
    middle of the sorted seeds is a seed without one."""
    if not xs:
        return None
    worst = -math.inf if direction == "max" else math.inf
    ys = sorted(worst if x is None else x for x in xs)
    middle = ys[(len(ys) - 1) // 2: len(ys) // 2 + 1]
    if worst in middle:
        return None
    return statistics.median(ys)


def summarise(runs: list[CellRun], directions: dict[str, str] | None = None) -> dict:
    """Per task and proposer: best score median/spread over seeds, trials/compute to 90% of the best known."""
    directions = directions or {}
    tasks: dict[str, dict] = {}
    for task in sorted({r.task for r in runs}):
        rs = [r for r in runs if r.task == task]
        d = directions.get(task, "max")
        pick = max if d == "max" else min
        base = _median([r.base for r in rs])
        scored = [s for r in rs for s in r.scores if s is not None]
        best_known = pick(scored) if scored else None
        thr = None
        if best_known is not None:
            ref = base if base is not None else (0.0 if d == "max" else best_known)
            thr = ref + 0.9 * (best_known - ref)
        props = {}
        for p in sorted({r.proposer for r in rs}):
            cells = sorted((r for r in rs if r.proposer == p), key=lambda r: r.seed)
            bests = [pick([s for s in r.scores if s is not None], default=None) for r in cells]
            hits = [reach(r.scores, r.compute, thr, d) if thr is not None else (None, None) for r in cells]
            known = [b for b in bests if b is not None]
            props[p] = {
                "seeds": [r.seed for r in cells], "best_per_seed": bests,
                "best_median": _median_of_seeds(bests, d), "best_min": min(known) if known else None,
                "best_max": max(known) if known else None,
                "trials_per_seed": [len(r.scores) for r in cells],
                "failed_trials": sum(s is None for r in cells for s in r.scores),
                "reached_90": sum(h[0] is not None for h in hits),
                "trials_to_90_median": _median([h[0] for h in hits]),
                "compute_to_90_median_s": _median([h[1] for h in hits]),
                "wall_to_90_median_s": _median([reach_wall(r.scores, r.wall, thr, d) if thr is not None else None
                                                for r in cells]),
                "compute_total_median_s": _median([sum(r.compute) for r in cells]),
                "wall_median_s": _median([r.wall_s for r in cells]),
                "finished": all(r.finished for r in cells),
            }
            if any(r.test is not None for r in rs):  # a run with held-out scores (issue 13 on)
                tests = [r.test for r in cells]
                props[p].update({"test_per_seed": tests, "test_median": _median_of_seeds(tests, d),
                                 "test_ci_per_seed": [list(r.test_ci) if r.test_ci else None for r in cells],
                                 "test_at_median": {str(t): _median_of_seeds([r.test_at.get(t) for r in cells], d)
                                                    for t in sorted({t for r in cells for t in r.test_at})}})
        first = rs[0].started
        settings = {"trial_steps": first.trial.steps, "batch_size": first.trial.batch_size,
                    "eval_limit": first.trial.eval_limit, "parallel": first.parallel, "threads": first.trial.threads}
        tasks[task] = {"direction": d, "base_score": base, "best_known": best_known, "threshold_90": thr,
                       "settings": settings | {"budget_trials": rs[0].budget_trials},
                       "proposers": props}
    return {"tasks": tasks, "constrained_tasks": sorted({r.task for r in runs if r.started.constraints})}


def _curves(runs: list[CellRun], direction: str, grid=None, axis: str = "compute"):
    """Per run: best-so-far on a trials axis (1..n), or on a grid of seconds: training compute
    (``axis="compute"``, trials in closing order) or wall-clock since the search began (``"wall"``,
    each score from the moment it was recorded: proposing, the LLM's time included, counts).

    Until its first scored trial a search holds the base model, so the curve starts at the base
    score: every curve is monotone, and so is their median (with gaps, a median over fewer seeds
    early on could fall later)."""
    import numpy as np

    out = []
    for r in runs:
        if grid is not None and axis == "wall":
            pick = max if direction == "max" else min
            timed = sorted((t, s) for s, t in zip(r.scores, r.wall) if s is not None and t is not None)
            row = []
            for x in grid:
                seen = [s for t, s in timed if t <= x] + ([r.base] if r.base is not None else [])
                row.append(pick(seen) if seen else np.nan)
            out.append(row)
            continue
        bsf = best_so_far(r.scores, direction, start=r.base)
        if grid is None:
            out.append([np.nan if b is None else b for b in bsf])
        else:
            cum = np.cumsum(r.compute) if r.compute else np.array([])
            row = []
            for x in grid:
                k = int(np.searchsorted(cum, x, side="right"))  # trials finished within x seconds
                v = bsf[k - 1] if k > 0 else r.base
                row.append(np.nan if v is None else v)
            out.append(row)
    n = max((len(c) for c in out), default=0)
    return np.array([c + [c[-1] if c else np.nan] * (n - len(c)) for c in out], dtype=float)


def plot_task(task: str, runs: list[CellRun], summary: dict, out_dir: Path) -> list[Path]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from trex.events.fsio import write_file_replace

    d = summary["direction"]
    paths = []
    total = max((sum(r.compute) for r in runs), default=0.0)
    longest = max((t for r in runs for t in r.wall if t is not None), default=0.0)
    names = {"trials": "trials", "compute": "training compute (s)",
             "wall": "wall-clock since the search began (s; proposing and the LLM's time included)"}
    for axis in ("trials", "compute", "wall"):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        grid = None if axis == "trials" else np.linspace(0, max(total if axis == "compute" else longest, 1e-9), 200)
        for i, p in enumerate(sorted(summary["proposers"])):
            rs = sorted((r for r in runs if r.proposer == p), key=lambda r: r.seed)
            ys = _curves(rs, d, grid, axis)
            if ys.size == 0:
                continue
            xs = np.arange(1, ys.shape[1] + 1) if grid is None else grid
            with warnings.catch_warnings():  # an all-NaN column (no score yet) is a gap, not an error
                warnings.simplefilter("ignore", RuntimeWarning)
                med, lo, hi = np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
            color = f"C{i}"
            kw = {"drawstyle": "steps-post"} if grid is not None else {"marker": "o", "markersize": 3}
            ax.plot(xs, med, color=color, label=f"{p} (median of {len(rs)})", **kw)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, step="post" if grid is not None else None)
        if summary["base_score"] is not None:
            ax.axhline(summary["base_score"], color="gray", linestyle="--", label="base model")
        if summary["threshold_90"] is not None:
            ax.axhline(summary["threshold_90"], color="gray", linestyle=":", linewidth=0.8, label="90% of best gain")
        ax.set_xlabel(names[axis], fontsize=8 if axis == "wall" else None)
        ax.set_ylabel(f"best so far, base model included ({'higher' if d == 'max' else 'lower'} is better)",
                      fontsize=8)
        ax.set_title(f"{task}: best so far vs {axis if axis != 'wall' else 'wall-clock'} (band: min-max over seeds)",
                     fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{task}-{axis}.png"  # a task name (load() leaves out a search whose label is not)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        write_file_replace(path, buf.getvalue())  # whole, never through a link at the file
        paths.append(path)
    return paths


def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _test_table(s: dict) -> list[str]:
    """Proposers ranked by the held-out test score of the node each search chose on validation."""
    props = {p: r for p, r in s["proposers"].items() if "test_median" in r}
    if not props:
        return ["No held-out test scores in this run (its searches predate the held-out evaluation): "
                "every score above is the selection score, on the split the search chose on.", ""]
    sign = -1 if s["direction"] == "max" else 1
    order = sorted(props, key=lambda p: (props[p]["test_median"] is None, sign * (props[p]["test_median"] or 0)))
    lines = ["**Held-out test** (the number to compare: each search's node chosen on validation, scored once on "
             "the whole test split that no decision saw; 95% bootstrap intervals over the test examples). "
             "Ranked by test:", "",
             "| rank | proposer | test (median) | per seed [95% CI] | validation best (median, selection) "
             "| test of the val-best after N trials (median) |",
             "|---|---|---|---|---|---|"]
    for i, p in enumerate(order, 1):
        r = props[p]
        per = ", ".join(f"{_f(t)} [{_f(ci[0])}–{_f(ci[1])}]" if ci else _f(t)
                        for t, ci in zip(r["test_per_seed"], r["test_ci_per_seed"]))
        at = ", ".join(f"{t}: {_f(v)}" for t, v in r.get("test_at_median", {}).items()) or "–"
        lines.append(f"| {i} | {p} | {_f(r['test_median'])} | {per} | {_f(r['best_median'])} | {at} |")
    return lines + [""]


AGENT, OPTIMISER, NO_LLM = "llm", "optuna", "rules"  # the arms issue 15's goals compare


def goals(summary: dict) -> list[str]:
    """Issue 15's goals, each stated as met or not from the held-out test scores (none for a run without
    them, or without both the agent and optuna): the agent's median best on test >= optuna's on every
    task; the agent's val-best after 5 trials reaching optuna's 10-trial median (on test) on at least half
    the tasks; a feasible best in >= 2 of 3 seeds on constrained tasks; and the LLM's margin over
    "rules + optimiser, no LLM" on test, which is the only credit the LLM gets."""
    tasks = {t: s for t, s in summary["tasks"].items()
             if {AGENT, OPTIMISER} <= set(s["proposers"]) and "test_median" in s["proposers"][AGENT]}
    if not tasks:
        return []
    lines = ["## Goals (issue 15), on held-out test", "",
             "| task | agent test ≥ optuna's (median) | agent after 5 trials ≥ optuna after 10 | feasible best "
             "(constrained) | LLM margin over rules + optimiser |", "|---|---|---|---|---|"]
    early = 0
    for task, s in tasks.items():
        pr, sign = s["proposers"], 1 if s["direction"] == "max" else -1
        a, o = pr[AGENT], pr[OPTIMISER]

        def ge(x, y):
            return x is not None and y is not None and sign * (x - y) >= 0

        first = f"{'met' if ge(a['test_median'], o['test_median']) else 'not met'} ({_f(a['test_median'])} vs " \
                f"{_f(o['test_median'])})"
        a5 = a.get("test_at_median", {}).get("5")
        hit = ge(a5, o["test_median"])
        early += hit
        second = f"{'yes' if hit else 'no'} ({_f(a5)} vs {_f(o['test_median'])})"
        if task in summary.get("constrained_tasks", ()):
            feas = sum(b is not None for b in a["best_per_seed"])
            third = f"{'met' if feas >= 2 else 'not met'} ({feas} of {len(a['best_per_seed'])} seeds)"
        else:
            third = "no constraints"
        if NO_LLM in pr and "test_per_seed" in pr[NO_LLM]:
            # a seed where one arm has no feasible best and the other has one counts as an infinite margin
            # for the other (both without: a tie); left out, it made a search with nothing look even
            pairs = list(zip(a["test_per_seed"], pr[NO_LLM]["test_per_seed"]))
            diffs = [0.0 if x is None and y is None else -math.inf if x is None else math.inf if y is None
                     else sign * (x - y) for x, y in pairs]
            margin = statistics.median(diffs) if diffs else None
            if margin is not None and math.isnan(margin):  # the middle pair: -inf and +inf
                margin = None
            verdict = ("the LLM adds nothing over rules + optimiser here" if margin is None or margin <= 0
                       else "the LLM is credited with this margin")
            shown = "−∞ (no feasible best where rules had one)" if margin == -math.inf else \
                "+∞ (a feasible best where rules had none)" if margin == math.inf else _f(margin)
            fourth = f"{'+' if (margin or 0) > 0 and math.isfinite(margin) else ''}{shown} median over " \
                     f"{len(pairs)} paired seeds: {verdict}"
        else:
            fourth = "no rules arm in this run: the LLM is credited with nothing"
        lines.append(f"| {task} | {first} | {second} | {third} | {fourth} |")
    half = early * 2 >= len(tasks)
    lines += ["", f"Reaching optuna's 10-trial median within 5 trials: {early} of {len(tasks)} task(s) — "
              f"{'met' if half else 'not met'} (the goal is at least half of the tasks). The goals are judged on "
              f"the tasks this run holds, not on every CPU task unless it holds them all.", ""]
    return lines


def markdown(tag: str, home: str, summary: dict, plots: dict[str, list[Path]], out_dir: Path) -> str:
    lines = [f"# FT-Bench report: `{tag}`", "",
             f"Read from the event log in `{home}` through DuckDB by `ftbench report --tag {tag}`. "
             "Each (task, proposer, seed) is one trex search; best = the best primary score among its trials, "
             "on the validation split the search selects on (a selection score, biased up by the choice). "
             "'To 90%' = trials (or training seconds, or wall-clock seconds from the search's start, proposing "
             "and the LLM's time included) until the search's best-so-far closes 90% of the gap "
             "between the base model and the best score any search found on the task; median over the seeds "
             "that reached it. A search with no feasible node (outside the task's constraints: it hands back "
             "nothing better than the base model) shows – and ranks below every score in the medians over "
             "seeds; 'failed trials' counts trials with no usable score: failed, or infeasible.", ""]
    for task, s in summary["tasks"].items():
        st = s["settings"]
        lines += [f"## {task}", "",
                  f"Base model: **{_f(s['base_score'])}** · best known: **{_f(s['best_known'])}** · 90% threshold: "
                  f"{_f(s['threshold_90'])} · metric direction: {s['direction']} · {st['budget_trials']} trials of {st['trial_steps']} "
                  f"steps, batch {st['batch_size']}, eval on {st['eval_limit']} examples, {st['parallel']} "
                  f"executor(s) x {st['threads']} thread(s)", "",
                  "| proposer | best (median) | spread (min–max) | per seed | trials to 90% (reached) "
                  "| compute to 90% | wall to 90% | compute per search | wall per search | failed trials |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p, r in s["proposers"].items():
            per_seed = ", ".join(_f(b) for b in r["best_per_seed"])
            lines.append(
                f"| {p} | {_f(r['best_median'])} | {_f(r['best_min'])}–{_f(r['best_max'])} | {per_seed} "
                f"| {_f(r['trials_to_90_median'], 1).removesuffix('.0')} ({r['reached_90']}/{len(r['seeds'])}) "
                f"| {_f(r['compute_to_90_median_s'], 0)} s | {_f(r.get('wall_to_90_median_s'), 0)} s "
                f"| {_f(r['compute_total_median_s'], 0)} s "
                f"| {_f(r['wall_median_s'], 0)} s | {r['failed_trials']} |")
        lines.append("")
        lines += _test_table(s)
        for pth in plots.get(task, []):
            lines.append(f"![{pth.stem}]({pth.relative_to(out_dir).as_posix()})")
        lines.append("")
    lines += goals(summary)
    return "\n".join(lines)


def write_report(home: str | Path, tag: str, out_dir: str | Path, warn=_warn) -> dict:
    """Write ``report.md``, ``results.json`` and the plots under ``out_dir``; return the summary. A search
    whose labels are not names is left out, with a ``warn`` line (:func:`load`)."""
    runs = load(home, tag, warn)
    if not runs:
        raise LookupError(f"no searches of benchmark run {tag!r} in {home} (`ftbench run --tag {tag}` makes them)")
    directions = {r.task: r.started.metric_direction for r in runs}
    summary = summarise(runs, directions)
    from trex.events.fsio import ensure_dir_for, write_file_replace

    # under the home (its default, HOME/reports/TAG): no folder on the way from the home, nor any file
    # written, may be a link (LinkRefused names it); elsewhere the folder itself must not be one
    out = ensure_dir_for(Path(out_dir), home)
    plots = {task: plot_task(task, [r for r in runs if r.task == task], s, out)
             for task, s in summary["tasks"].items()}
    summary["tag"] = tag
    summary["searches"] = [{"search_id": r.search_id, "task": r.task, "proposer": r.proposer, "seed": r.seed,
                            "base": r.base, "scores": r.scores, "compute_s": r.compute, "wall_s": r.wall_s,
                            "wall_at_s": r.wall,
                            "finished": r.finished,
                            **({"test": r.test, "test_ci": list(r.test_ci) if r.test_ci else None,
                                "test_at": {str(t): v for t, v in sorted(r.test_at.items())}}
                               if r.test is not None else {})} for r in runs]
    write_file_replace(out / "report.md", markdown(tag, str(home), summary, plots, out).encode("utf-8"))
    from trex.commands.common import finite  # NaN and infinities as the log writes them: strict JSON

    write_file_replace(out / "results.json",
                       json.dumps(finite(summary), indent=2, sort_keys=True, allow_nan=False).encode("utf-8"))
    return summary
