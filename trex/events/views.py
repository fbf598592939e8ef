"""SQL views over the ``events`` view that the log's own event families define.

Packages above the log add theirs through ``connect(home, views=...)`` of :mod:`trex.events.sql`
(``trex.search.views`` does, for ``trex sql``); the log never names them.

Every cast is a ``TRY_CAST``: a value the event's model allows but the column type cannot hold (an
imported ``attempt`` of 3,000,000,000, ``prompt_tokens`` of 2**64) reads as NULL in its row; a ``CAST``
failed every query over the view, for the whole home.
"""
VIEWS: dict[str, str] = {
    "trials": """
        CREATE VIEW trials AS
        SELECT search_id, payload->>'trial_id' AS trial_id, payload->>'node_id' AS node_id,
               max(CASE WHEN type = 'TrialStarted' THEN seq END) AS started_seq,
               max(CASE WHEN type IN ('TrialFinished', 'TrialFailed', 'TrialAbandoned') THEN seq END) AS closed_seq,
               arg_max(type, seq) FILTER (WHERE type IN ('TrialStarted', 'TrialFinished', 'TrialFailed', 'TrialAbandoned')) AS last_event,
               max(CASE WHEN type = 'TrialFinished' THEN payload->>'adapter' END) AS adapter,
               max(CASE WHEN type = 'TrialFailed' THEN payload->>'reason' END) AS failure_reason,
               max(CASE WHEN type IN ('TrialFinished', 'TrialFailed') THEN TRY_CAST(payload->>'compute_seconds' AS DOUBLE) END) AS compute_seconds,
               count(*) FILTER (WHERE type = 'TrialProgressed') AS progress_events
        FROM events
        WHERE type IN ('TrialStarted', 'TrialProgressed', 'TrialFinished', 'TrialFailed', 'TrialAbandoned')
        GROUP BY search_id, payload->>'trial_id', payload->>'node_id'
    """,
    "metrics": """
        CREATE VIEW metrics AS
        SELECT search_id, seq, payload->>'node_id' AS node_id, payload->>'name' AS name,
               TRY_CAST(payload->>'value' AS DOUBLE) AS value, TRY_CAST(payload->>'primary' AS BOOLEAN) AS "primary",
               payload->>'split' AS split, payload->>'eval_id' AS eval_id, recorded_at
        FROM events WHERE type = 'MetricRecorded'
    """,
    "insights": """
        CREATE VIEW insights AS
        SELECT search_id, seq, payload->>'insight_id' AS insight_id, payload->>'text' AS text,
               TRY_CAST(json_extract(payload, '$.support') AS VARCHAR[]) AS support, payload->>'task' AS task,
               payload->>'source_search_id' AS source_search_id, recorded_at
        FROM events WHERE type = 'InsightDistilled'
    """,
    "llm_calls": """
        CREATE VIEW llm_calls AS
        SELECT search_id, seq, payload->>'call_id' AS call_id, payload->>'purpose' AS purpose,
               payload->>'backend' AS backend, payload->>'model' AS model,
               type = 'LlmCallMade' AS ok, TRY_CAST(payload->>'attempt' AS BIGINT) AS attempt,
               TRY_CAST(payload->>'prompt_tokens' AS BIGINT) AS prompt_tokens,
               TRY_CAST(payload->>'completion_tokens' AS BIGINT) AS completion_tokens,
               TRY_CAST(payload->>'latency_s' AS DOUBLE) AS latency_s, payload->>'error' AS error, recorded_at
        FROM events WHERE type IN ('LlmCallMade', 'LlmCallFailed')
    """,
    "notes": """
        CREATE VIEW notes AS
        SELECT search_id, seq, payload->>'text' AS text, payload->>'author' AS author, recorded_at
        FROM events WHERE type = 'NoteAdded'
    """,
}
