"""Fuzzing the import validator: a valid export, randomly damaged, is refused whole or imported whole.

The property, for any damage to the records of an export (values in any column, payload JSON
mutated, rows dropped, duplicated or reordered), with or without the hash chains recomputed
(so that the checks behind the chain are reached too):

* ``import_file`` raises :class:`BadImportFile` with one line naming what is wrong, and the
  home's log is exactly as it was (nothing half-written, across streams); or
* it succeeds, the log verifies, every stored event decodes and every search folds.

Never another exception type.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trex.events import segments
from trex.events.base import EventError
from trex.events.envelope import GENESIS, RawEvent, chain_hash
from trex.events.log import EventLog
from trex.events.transfer import BadImportFile, import_file
from trex.events.verify import verify

ROOT = Path(__file__).resolve().parents[1]
MIXED = ROOT / "tests" / "fixtures" / "golden" / "mixed.jsonl"
INT64 = (-(2**63), 2**63 - 1)
COLUMNS = [c for c in segments.SCHEMA.names]


def _raw(r: dict) -> RawEvent:
    return RawEvent(r["event_id"], r["type"], r["schema_version"], r["payload"], r["recorded_at"],
                    r["causation_id"], r["correlation_id"])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Records of a valid export of three searches (one of every kind of event, two of notes),
    and a folder for the examples' homes."""
    root = tmp_path_factory.mktemp("fuzz")
    origin = EventLog(root / "origin")
    mixed = [json.loads(line) for line in MIXED.read_text(encoding="utf-8").splitlines() if line.strip()]
    origin.append_raw("golden-mixed", [_raw(r) for r in mixed])
    for sid, n in (("a", 3), ("b", 2)):
        origin.append_raw(sid, [RawEvent(f"{sid}-{i}", "NoteAdded", 1,
                                         json.dumps({"author": "", "text": f"{sid}{i}"}, separators=(",", ":")),
                                         f"2026-01-0{i + 1}T00:00:00.000000Z") for i in range(n)])
    assert verify(origin).ok
    return _Base([e._asdict() for e in origin.read()], root)


class _Base(tuple):
    def __new__(cls, records, root):
        return super().__new__(cls, (records, root))

    def __repr__(self):  # hypothesis prints the arguments of a failing example: not all the records
        return f"<export of {len(self[0])} records>"


# ------------------------------------------------------------------------------------ damage
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_weird = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), _text,
    st.sampled_from(["NaN", "Infinity", "-Infinity", "", "null", "1e999", "\x00"]),
    st.just([]), st.just({}), st.lists(st.integers(), max_size=3),
    st.dictionaries(_text, st.integers(), max_size=2),
)
_times = st.one_of(
    _text,
    st.sampled_from(["2026-13-45T25:61:00.000000Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00",
                     "2026-01-01T00:00:00+00:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                     "2026-01-01T00:00:00.000000Z\n", " 2026-01-01T00:00:00Z", "NaN"]),
)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def payload_damage(draw, text: str) -> str:
    """One change to a payload's JSON text."""
    kind = draw(st.sampled_from(["delete", "retype", "add", "dupkey", "nest", "deep", "truncate", "replace",
                                 "not-object", "nan-literal"]))
    if not isinstance(text, str):  # an earlier damage left no text at all (None): put some back
        kind = "replace"
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        obj = None
    keys = sorted(obj) if isinstance(obj, dict) else []
    if kind in ("delete", "retype", "nest", "dupkey") and not keys:
        kind = "replace"
    if kind == "delete":
        del obj[draw(st.sampled_from(keys))]
    elif kind == "retype":
        obj[draw(st.sampled_from(keys))] = draw(_weird)
    elif kind == "add":
        obj = obj if isinstance(obj, dict) else {}
        obj[draw(_text)] = draw(_weird)
    elif kind == "nest":
        k = draw(st.sampled_from(keys))
        for _ in range(draw(st.integers(1, 5))):
            obj[k] = draw(st.sampled_from([[obj[k]], {"v": obj[k]}]))
    elif kind == "dupkey":
        k = draw(st.sampled_from(keys))
        return "{" + json.dumps(k) + ":" + json.dumps(draw(_weird)) + "," + text.lstrip()[1:]
    elif kind == "deep":
        return '{"text":' + _deep(draw(st.sampled_from([50, 1000, 100_000]))) + "}"
    elif kind == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif kind == "replace":
        return draw(st.one_of(_text, st.sampled_from(["null", "[]", "1", '"x"', "{}", "NaN", "{\"a\":NaN}"])))
    elif kind == "not-object":
        return json.dumps(draw(st.sampled_from([[obj], 1, "x", None, True])))
    elif kind == "nan-literal":
        return text.replace(":0", ":NaN", 1) if ":0" in text else '{"text":Infinity}'
    return json.dumps(obj, separators=(",", ":"))


@st.composite
def damage(draw, n: int):
    """A list of (row index, column, new value) changes and row operations for ``n`` records."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["payload", "payload", "payload", "recorded_at", "seq", "search_id",
                                     "event_id", "type", "schema_version", "position", "ids", "null",
                                     "drop", "duplicate", "swap", "retype-column"]))
        i = draw(st.integers(0, n - 1))
        if what == "payload":
            ops.append(("payload", i, draw(st.data())))
        elif what == "recorded_at":
            ops.append(("set", i, "recorded_at", draw(_times)))
        elif what in ("seq", "position"):
            ops.append(("set", i, what, draw(st.one_of(st.integers(*INT64), st.sampled_from([0, -1, 1, 2, 2**62])))))
        elif what == "search_id":
            ops.append(("set", i, what, draw(st.one_of(_text, st.sampled_from(["a", "b", "golden-mixed", "",
                                                                              "x" * 300, "\x00", "../x"])))))
        elif what == "event_id":
            ops.append(("set", i, what, draw(st.one_of(_text, st.sampled_from(["a-0", "b-1", "", "x" * 300])))))
        elif what == "type":
            ops.append(("set", i, what, draw(st.one_of(_text, st.sampled_from(
                ["NoteAdded", "SearchStarted", "SearchForked", "MetricRecorded", "WidgetFrobbed", ""])))))
        elif what == "schema_version":
            ops.append(("set", i, what, draw(st.one_of(st.integers(-(2**31), 2**31 - 1),
                                                      st.sampled_from([0, -1, 2, 99])))))
        elif what == "ids":
            ops.append(("set", i, draw(st.sampled_from(["causation_id", "correlation_id"])),
                        draw(st.one_of(st.none(), _text))))
        elif what == "null":
            ops.append(("set", i, draw(st.sampled_from(COLUMNS)), None))
        elif what == "retype-column":
            ops.append(("retype", draw(st.sampled_from(COLUMNS))))
        else:
            ops.append((what, i, draw(st.integers(0, n - 1))))
    return ops


def _apply(records: list[dict], ops, rechain: bool) -> list[dict]:
    recs = [dict(r) for r in records]
    for op in ops:
        if not recs:
            break
        kind = op[0]
        if kind == "retype":
            continue
        i = op[1] % len(recs)
        if kind == "payload":
            recs[i]["payload"] = op[2].draw(payload_damage(recs[i]["payload"]))
        elif kind == "set":
            recs[i][op[2]] = op[3]
        elif kind == "drop":
            del recs[i]
        elif kind == "duplicate":
            recs.insert(op[2] % (len(recs) + 1), dict(recs[i]))
        elif kind == "swap":
            j = op[2] % len(recs)
            recs[i], recs[j] = recs[j], recs[i]
    if rechain:  # what a forger does: the chains verify again, only the content checks are left
        prev: dict = {}
        for r in recs:
            try:
                p = prev.get(r["search_id"], GENESIS)
                r["prev_hash"] = p
                r["hash"] = chain_hash(p, r["event_id"], r["search_id"], r["seq"], r["type"], r["schema_version"],
                                       r["recorded_at"], r["causation_id"], r["correlation_id"], r["payload"])
                prev[r["search_id"]] = r["hash"]
            except (TypeError, AttributeError):
                pass  # a null where the hash needs a value: left as it is
    return recs


def _write(path: Path, recs: list[dict], ops) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = segments.records_to_table(recs)
    for op in ops:
        if op[0] == "retype":  # a column stored as text (or as numbers where it was text)
            col = op[1]
            i = table.schema.get_field_index(col)
            arr = table.column(col)
            new = arr.cast(pa.string()) if pa.types.is_integer(arr.type) else pa.array(
                [len(v) if v is not None else None for v in arr.to_pylist()], pa.int64())
            table = table.set_column(i, col, new)
    table = table.replace_schema_metadata({"trex.export.v1": "golden-mixed"})
    pq.write_table(table, path)


def _state(home: Path):
    events = [e._asdict() for e in EventLog(home).read()]
    segdir = EventLog(home).segdir
    files = {p.name: p.read_bytes() for p in sorted(segdir.iterdir())} if segdir.is_dir() else {}
    return events, files


@settings(max_examples=int(__import__("os").environ.get("FUZZ_N", "160")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(data=st.data(), rechain=st.booleans(), prior=st.sampled_from(["empty", "prefix", "diverged", "other"]))
def test_a_damaged_import_is_refused_whole_or_imported_whole(base, data, rechain, prior):
    records, root = base
    ops = data.draw(damage(len(records)), label="damage")
    recs = _apply(records, ops, rechain)
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        home = work / "home"
        log = EventLog(home)
        if prior == "prefix":  # this home already holds the start of stream a, as the file has it
            log.append_raw("a", [_raw(r) for r in records if r["search_id"] == "a"][:2])
        elif prior == "diverged":
            log.append_raw("b", [RawEvent("mine", "NoteAdded", 1, '{"author":"","text":"mine"}',
                                          "2026-02-01T00:00:00.000000Z")])
        elif prior == "other":
            log.append_raw("unrelated", [RawEvent("u-0", "NoteAdded", 1, '{"author":"","text":"u"}',
                                                  "2026-02-01T00:00:00.000000Z")])
        f = work / "export.parquet"
        try:
            _write(f, recs, ops)
        except Exception:  # damage pyarrow itself will not write (e.g. an int64 out of range): nothing to test
            event("not writable")
            return
        before = _state(home)
        try:
            added = import_file(EventLog(home), f)
        except BadImportFile as e:
            msg = str(e)
            event("refused: " + msg.split(": ", 2)[-1][:30])
            assert msg and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
            assert len(msg) < 2000, f"message too long ({len(msg)} chars)"
            assert _state(home) == before, f"a refused import changed the log ({msg})"
            return
        event("imported")
        # imported: the log verifies, every event decodes, every search folds
        from trex.search import build_tree

        fresh = EventLog(home)
        rep = verify(fresh)
        assert rep.ok, f"import of {ops} left a log that does not verify: {rep.problems}"
        stored = fresh.read()
        for env in stored:
            env.event
        for sid in sorted({e.search_id for e in stored}):
            build_tree(fresh, sid)
        mine = {e.event_id: e.hash for e in stored}
        for r in recs:
            assert mine.get(r["event_id"]) == r["hash"] or added.get(r["search_id"], 0) == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_bad_import_file_is_an_error_of_the_log():
    assert issubclass(BadImportFile, EventError)
