"""DuckDB views of the search tree over the base view ``events`` (see trex.events.envelope.COLUMNS).

``trex sql`` (:func:`query`, :func:`connect`) creates ``events`` and then runs these, in order
(after trex.events.views, which has the ``metrics``, ``trials`` and ``insights`` views). They read one
stream at a time: a fork's rows hold its own events only (its prefix lives in
the parent's rows). A node's ``status`` follows the same rule as the
projection: the latest lifecycle event about it, counting from the event that
created it (except that an ``EvaluationFailed`` after a primary score leaves it evaluated) (a repeated PlanProposed of an existing node changes nothing, and
events about a node before it exists are ignored).
"""
from __future__ import annotations

# event type -> the node status it sets (the same table the fold's handlers implement)
LIFECYCLE = {
    "PlanProposed": "proposed",
    "PlanRejected": "rejected",
    "TrialStarted": "running",
    "TrialFinished": "trained",
    "TrialReused": "trained",
    "TrialFailed": "failed",
    "TrialAbandoned": "abandoned",
    "EvaluationFinished": "evaluated",
    "EvaluationFailed": "failed",
    "NodePruned": "pruned",
}

_CASE = "CASE type " + " ".join(f"WHEN '{t}' THEN '{s}'" for t, s in LIFECYCLE.items()) + " END"
_TYPES = ", ".join(f"'{t}'" for t in LIFECYCLE)

VIEWS: dict[str, str] = {
    "nodes": f"""
CREATE OR REPLACE VIEW nodes AS
WITH RECURSIVE lineage(search_id, root) AS (  -- a fork is judged by the constraints its root started with
    SELECT DISTINCT search_id, search_id FROM events WHERE type = 'SearchStarted'
    UNION
    SELECT f.search_id, l.root FROM events f JOIN lineage l
      ON f.type = 'SearchForked' AND json_extract_string(f.payload, '$.parent_search_id') = l.search_id
),
first_start AS (
    SELECT search_id, json_extract(payload, '$.constraints') AS cons FROM events WHERE type = 'SearchStarted'
    QUALIFY row_number() OVER (PARTITION BY search_id ORDER BY seq) = 1
),
constraint_pos AS (
    SELECT l.search_id, s.cons,
           unnest(range(coalesce(json_array_length(s.cons), 0)::BIGINT)) AS pos
    FROM lineage l JOIN first_start s ON s.search_id = l.root
),
constraint_list AS (
    SELECT search_id, pos,
           json_extract_string(cons, '$[' || pos || '].metric') AS metric,
           TRY_CAST(json_extract_string(cons, '$[' || pos || '].at_least') AS DOUBLE) AS at_least,
           TRY_CAST(json_extract_string(cons, '$[' || pos || '].at_most') AS DOUBLE) AS at_most
    FROM constraint_pos
),
created AS (
    SELECT search_id,
           json_extract_string(payload, '$.node_id') AS node_id,
           json_extract_string(payload, '$.parent_id') AS parent_id,
           CASE WHEN type = 'PlanProposed' THEN coalesce(json_extract_string(payload, '$.operator'), 'draft')
                ELSE 'draft' END AS operator,
           CASE WHEN type = 'PlanProposed' THEN json_extract(payload, '$.plan') ELSE '{{}}'::JSON END AS plan,
           seq AS created_seq
    FROM events
    WHERE type IN ('PlanProposed', 'PlanRejected') AND json_extract_string(payload, '$.node_id') IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY search_id, json_extract_string(payload, '$.node_id') ORDER BY seq) = 1
),
life AS (
    SELECT search_id, json_extract_string(payload, '$.node_id') AS node_id, seq, type, {_CASE} AS status
    FROM events WHERE type IN ({_TYPES})
),
status AS (
    SELECT c.search_id, c.node_id, arg_max(l.status, l.seq) AS status, arg_max(l.type, l.seq) AS last_type
    FROM created c JOIN life l ON l.search_id = c.search_id AND l.node_id = c.node_id
     AND (l.seq = c.created_seq OR (l.seq > c.created_seq AND l.type <> 'PlanProposed'))
    GROUP BY c.search_id, c.node_id
),
score AS (
    SELECT c.search_id, c.node_id,
           arg_max(TRY_CAST(json_extract_string(e.payload, '$.value') AS DOUBLE), e.seq) AS score
    FROM created c JOIN events e ON e.search_id = c.search_id AND e.type = 'MetricRecorded'
     AND json_extract_string(e.payload, '$.node_id') = c.node_id AND e.seq > c.created_seq
     AND json_extract(e.payload, '$.primary')::BOOLEAN
    GROUP BY c.search_id, c.node_id
),
secondary AS (  -- a node's latest value of each secondary metric, as the fold keeps them
    SELECT c.search_id, c.node_id, json_extract_string(e.payload, '$.name') AS metric,
           arg_max(TRY_CAST(json_extract_string(e.payload, '$.value') AS DOUBLE), e.seq) AS value
    FROM created c JOIN events e ON e.search_id = c.search_id AND e.type = 'MetricRecorded'
     AND json_extract_string(e.payload, '$.node_id') = c.node_id AND e.seq > c.created_seq
     AND NOT coalesce(json_extract(e.payload, '$.primary')::BOOLEAN, false)
    GROUP BY c.search_id, c.node_id, metric
),
feasibility AS (  -- the same judgement as trex.events.search.Constraint.violation, word for word
    SELECT sc.search_id, sc.node_id,
           string_agg(CASE
             WHEN m.value IS NULL OR NOT isfinite(m.value) THEN k.metric || ' not measured'
             WHEN k.at_least IS NOT NULL AND m.value < k.at_least
               THEN format('{{}} {{:.4g}} < {{:g}} required', k.metric, m.value, k.at_least)
             WHEN k.at_most IS NOT NULL AND m.value > k.at_most
               THEN format('{{}} {{:.4g}} > {{:g}} allowed', k.metric, m.value, k.at_most)
           END, '; ' ORDER BY k.pos) AS infeasible
    FROM score sc JOIN constraint_list k USING (search_id)
    LEFT JOIN secondary m ON m.search_id = sc.search_id AND m.node_id = sc.node_id AND m.metric = k.metric
    WHERE sc.score IS NOT NULL AND isfinite(sc.score)
    GROUP BY sc.search_id, sc.node_id
)
SELECT c.search_id, c.node_id, c.parent_id, c.operator,
       -- as in the fold: a failed evaluation of another split does not undo a node's score
       CASE WHEN s.last_type = 'EvaluationFailed' AND sc.score IS NOT NULL THEN 'evaluated' ELSE s.status END
         AS status,
       sc.score,
       -- why a scored node breaks the task's constraints (NULL: it holds them, or it has no score)
       f.infeasible,
       c.plan, c.created_seq
FROM created c
JOIN status s USING (search_id, node_id)
LEFT JOIN score sc USING (search_id, node_id)
LEFT JOIN feasibility f USING (search_id, node_id)
""",
    "decisions": """
CREATE OR REPLACE VIEW decisions AS
SELECT search_id, seq,
       json_extract_string(payload, '$.decision_id') AS decision_id,
       json_extract_string(payload, '$.node_id') AS node_id,
       json_extract_string(payload, '$.operator') AS operator,
       json_extract_string(payload, '$.policy') AS policy,
       TRY_CAST(json_extract_string(payload, '$.seed') AS BIGINT) AS seed,
       json_extract(payload, '$.scores') AS scores,
       json_extract_string(payload, '$.reason') AS reason
FROM events WHERE type = 'NodeSelected'
""",
}


def connect(home, **kw):
    """:func:`trex.events.sql.connect` with the tree's views as well (``nodes``, ``decisions``)."""
    from trex.events.sql import connect as connect_log

    return connect_log(home, views=VIEWS.values(), **kw)


def query(home, sql: str, *, isolated: bool = False, **kw):
    """:func:`trex.events.sql.query` with the tree's views as well; ``isolated``: in a child process
    whose limits hold (:func:`trex.events.sql.query_isolated`), what ``trex sql`` runs."""
    from trex.events.sql import query as query_log, query_isolated

    return (query_isolated if isolated else query_log)(home, sql, views=tuple(VIEWS.values()), **kw)
