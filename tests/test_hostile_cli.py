"""A matrix of hostile input against the commands, run as a user runs them (a subprocess each).

Every case must be a clear refusal — a non-zero exit, one line on stderr naming what is wrong,
no traceback — and must leave what the log had acknowledged as it was (same events, same
hashes). The home starts with one search of five notes and one exported copy of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.transfer import export_search
from trex.plan import example_plan

GOOD_TASK = """name: my-task
domain: test
description: a user's own task
base_model: {path: model}
data: {files: {train: train.jsonl, eval: eval.jsonl}}
metrics: [{name: exact_match, split: eval, primary: true}]
"""


def _write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def _segment(home: Path) -> Path:
    return next((home / "log" / "segments").glob("*.jsonl"))


def _flip_last_record(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0x01
    seg.write_bytes(bytes(data))


def _garbage_in_middle(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    lines = seg.read_bytes().split(b"\n")
    lines.insert(2, b"~00000010 deadbeef not a record at all")
    seg.write_bytes(b"\n".join(lines))


def _segment_is_a_link(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    victim = home.parent / "victim.jsonl"
    victim.write_bytes(seg.read_bytes())
    seg.unlink()
    seg.symlink_to(victim)


def _lock_is_a_folder(home: Path, tmp: Path | None = None) -> None:
    lock = home / "log" / "append.lock"
    if lock.exists():
        lock.unlink()
    lock.mkdir()


# (id, args with {home}/{tmp} placeholders, a setup on (home, tmp), text the one line must contain)
CASES = [
    # ---- trex sql: statements the sandbox refuses, limits that would not hold, nonsense
    ("sql-copy", ["sql", "COPY events TO '{tmp}/x.csv'"], None, "refused"),
    ("sql-attach", ["sql", "ATTACH '{tmp}/x.db'"], None, "refused"),
    ("sql-install", ["sql", "INSTALL httpfs"], None, "refused"),
    ("sql-load", ["sql", "LOAD httpfs"], None, "refused"),
    ("sql-set", ["sql", "SET memory_limit='100GB'"], None, "refused"),
    ("sql-create", ["sql", "CREATE TABLE t AS SELECT 1"], None, "refused"),
    ("sql-insert", ["sql", "INSERT INTO events VALUES (1)"], None, "refused"),
    ("sql-delete", ["sql", "DELETE FROM events"], None, "refused"),
    ("sql-select-then-copy", ["sql", "SELECT 1; COPY events TO '{tmp}/x.csv'"], None, "refused"),
    ("sql-explain-analyze", ["sql", "EXPLAIN ANALYZE SELECT 1"], None, "refused"),
    ("sql-read-passwd", ["sql", "SELECT * FROM read_csv('/etc/passwd')"], None, "refused"),
    ("sql-read-home", ["sql", "SELECT * FROM read_text('{tmp}/secret.txt')"],
     lambda h, t: _write(t / "secret.txt", "s3cret"), "refused"),
    ("sql-syntax", ["sql", "SELEC 1"], None, "error"),
    ("sql-unknown-view", ["sql", "SELECT * FROM nope"], None, "nope"),
    ("sql-empty", ["sql", ""], None, "error"),
    ("sql-timeout-0", ["sql", "SELECT 1", "--timeout", "0"], None, "timeout"),
    ("sql-timeout-neg", ["sql", "SELECT 1", "--timeout", "-3"], None, "timeout"),
    ("sql-timeout-nan", ["sql", "SELECT 1", "--timeout", "nan"], None, "timeout"),
    ("sql-timeout-inf", ["sql", "SELECT 1", "--timeout", "inf"], None, "timeout"),
    ("sql-timeout-text", ["sql", "SELECT 1", "--timeout", "soon"], None, "timeout"),
    ("sql-memory-words", ["sql", "SELECT 1", "--memory-limit", "lots"], None, "memory limit"),
    ("sql-memory-zero", ["sql", "SELECT 1", "--memory-limit", "0GB"], None, "memory limit"),
    ("sql-memory-tiny", ["sql", "SELECT 1", "--memory-limit", "1KB"], None, "memory limit"),
    ("sql-memory-past", ["sql", "SELECT length(string_agg(repeat('x', 1000), '')) FROM range(3000000)",
                         "--memory-limit", "64MB"], None, "memory"),
    ("sql-format", ["sql", "SELECT 1", "--format", "xml"], None, "format"),
    # ---- damaged or hostile log files
    ("log-flipped-last", ["sql", "SELECT count(*) FROM events"], _flip_last_record, "segment"),
    ("log-flipped-ls", ["ls"], _flip_last_record, "segment"),
    ("log-flipped-note", ["note", "s", "more"], _flip_last_record, "segment"),
    ("log-garbage-sql", ["sql", "SELECT count(*) FROM events"], _garbage_in_middle, "segment"),
    ("log-garbage-replay", ["replay", "s"], _garbage_in_middle, "segment"),
    ("log-garbage-tree", ["tree", "s"], _garbage_in_middle, "segment"),
    ("log-link-note", ["note", "s", "more"], _segment_is_a_link, "link"),
    ("log-link-sql", ["sql", "SELECT 1"], _segment_is_a_link, "link"),
    ("log-lock-folder", ["note", "s", "more"], _lock_is_a_folder, "lock"),
    ("log-newer-segment", ["ls"], lambda h, t: _write(_segment(h), _segment(h).read_bytes().replace(
        b"trex-log-segment v2", b"trex-log-segment v9", 1)), "segment"),
    # ---- trex import
    ("import-missing", ["import", "{tmp}/nothing.parquet"], None, "no such file"),
    ("import-text", ["import", "{tmp}/x.parquet"], lambda h, t: _write(t / "x.parquet", "hello"), "Parquet"),
    ("import-empty", ["import", "{tmp}/e.parquet"], lambda h, t: _write(t / "e.parquet", b""), "Parquet"),
    ("import-folder", ["import", "{tmp}"], None, "error"),
    ("import-deep-json", ["import", "{tmp}/deep.parquet"],
     lambda h, t: _write(t / "deep.parquet", "[" * 200000 + "]" * 200000), "Parquet"),
    ("import-into-log", ["export", "s", "-o", "{home}/log/segments/x.parquet"], None, "refusing"),
    # ---- trex note and the commands on searches
    ("note-unknown", ["note", "nope", "hi"], None, "no search"),
    ("note-empty", ["note", "s", ""], None, "invalid note"),
    ("note-huge", ["note", "s", "x" * 20000], None, "invalid note"),
    ("replay-unknown", ["replay", "nope"], None, "nope"),
    ("replay-until-past", ["replay", "s", "--until", "999"], None, "out of range"),
    ("replay-until-neg", ["replay", "s", "--until", "-1"], None, "out of range"),
    ("tree-unknown", ["tree", "nope"], None, "nope"),
    ("tree-format", ["tree", "s", "--format", "pdf"], None, "format"),
    ("fork-unknown-node", ["fork", "s", "--at", "n99"], None, "n99"),
    ("fork-unknown-search", ["fork", "nope", "--at", "n1"], None, "nope"),
    ("export-unknown", ["export", "nope", "-o", "{tmp}/o.parquet"], None, "nope"),
    ("status-unknown", ["status", "nope"], None, "nope"),
    ("resume-unknown", ["resume", "nope"], None, "nope"),
    ("unknown-command", ["frobnicate"], None, "frobnicate"),
    # ---- plans (trex train)
    ("plan-missing", ["train", "{tmp}/none.json", "--task", "arith-sub"], None, "none.json"),
    ("plan-not-json", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "{lr: fast"), "plan"),
    ("plan-deep", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "[" * 100000 + "]" * 100000), "nested too deeply"),
    ("plan-bad-lr", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", json.dumps({"learning_rate": 7})), "invalid plan"),
    ("plan-unknown-field", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", json.dumps({"colour": "blue"})), "invalid plan"),
    ("plan-list", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "[1, 2]"), "plan"),
    ("plan-unknown-task", ["train", "{tmp}/p.json", "--task", "nope"],
     lambda h, t: _write(t / "p.json", example_plan().model_dump_json()), "unknown task"),
    ("plan-task-path", ["train", "{tmp}/p.json", "--task", "../../etc"],
     lambda h, t: _write(t / "p.json", example_plan().model_dump_json()), "task"),
    # ---- task files (trex run refuses them before anything starts)
    ("task-not-yaml", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", "name: [unclosed\n"), "YAML"),
    ("task-list", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", "- a\n- b\n"), "mapping"),
    ("task-split-path", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "eval: eval.jsonl}", "../../x: eval.jsonl}") + "splits: [train, ../../x]\n"), "pattern"),
    ("task-bad-name", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "name: my-task", "name: ../../evil")), "name"),
    ("task-missing-files", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK), "model"),
    ("task-unknown-metric", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "exact_match", "bleurt_42")), "bleurt_42"),
    ("task-two-primaries", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "primary: true}]", "primary: true}, {name: accuracy, split: eval, primary: true}]")), "primary"),
    ("task-extra-key", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK + "colour: red\n"),
     "colour"),
    ("run-unknown-task", ["run", "nope"], None, "unknown task"),
    ("run-bad-budget", ["run", "arith-sub", "--budget-trials", "0"], None, "budget-trials"),
]


# ==== sealed Parquet segments, limits, ftbench (issue 17, "Silent prefixes" / "Tracebacks") =========
# DuckDB does not verify Parquet page checksums: a byte flipped in a sealed segment was read as other
# data with exit 0. Each case seals the home's segment, flips one byte where the setup says (in the
# footer, a data page, a dictionary page), with or without the segment's digest (a segment sealed by
# an older trex has none), and the command must refuse in one line naming the segment.
def _sealed(home: Path) -> Path:
    EventLog(home).seal()
    return next((home / "log" / "segments").glob("*.parquet"))


def _offsets(seg: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    md = pq.read_metadata(seg)
    cols = {md.row_group(0).column(j).path_in_schema: md.row_group(0).column(j) for j in range(md.num_columns)}
    size = seg.stat().st_size
    footer_len = int.from_bytes(seg.read_bytes()[-8:-4], "little")
    sid, seq = cols["search_id"], cols["seq"]
    return {
        "footer": size - 8 - footer_len // 2,  # inside the thrift footer (schema, offsets, statistics)
        # near the end of seq's data page (1..5, the same bytes in every run)
        "data": (seq.dictionary_page_offset or seq.data_page_offset) + seq.total_compressed_size - 2,
        "dict": sid.data_page_offset - 1,  # the last byte of search_id's dictionary page (holds "s")
    }


def _flip_sealed(where: str, digest: bool = True):
    def setup(home: Path, tmp: Path | None = None) -> None:
        seg = _sealed(home)
        if not digest:
            seg.with_suffix(".sha256").unlink()  # as sealed by a trex from before digests
        data = bytearray(seg.read_bytes())
        data[_offsets(seg)[where]] ^= 0x10
        seg.write_bytes(bytes(data))
    return setup


def _garble_footer_head(home: Path, tmp: Path | None = None) -> None:
    """32 bytes of 0xff at the start of the thrift footer of an old (digest-less) segment: pyarrow's message
    about it runs to several lines; the command's stays one."""
    seg = _sealed(home)
    seg.with_suffix(".sha256").unlink()
    data = bytearray(seg.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little") + 4
    data[start:start + 32] = b"\xff" * 32
    seg.write_bytes(bytes(data))


SEALED_CASES = [
    *[(f"log-sealed-{where}-{cmd[0]}", cmd, _flip_sealed(where), "00000001.parquet")
      for where in ("footer", "data", "dict")
      for cmd in (["sql", "SELECT search_id, count(*) FROM events GROUP BY 1"], ["ls"])],
    *[(f"log-sealed-nodigest-{where}-sql", ["sql", "SELECT * FROM events WHERE search_id = 's'"],
       _flip_sealed(where, digest=False), "00000001.parquet") for where in ("footer", "data", "dict")],
    ("log-sealed-nodigest-dict-ls", ["ls"], _flip_sealed("dict", digest=False), "00000001.parquet"),
    ("log-sealed-data-replay", ["replay", "s"], _flip_sealed("data"), "00000001.parquet"),
    ("log-sealed-nodigest-footer-replay", ["replay", "s"], _garble_footer_head, "00000001.parquet"),
    ("log-sealed-nodigest-footer-sql", ["sql", "SELECT 1"], _garble_footer_head, "00000001.parquet"),
    ("sql-memory-overflow", ["sql", "SELECT 1", "--memory-limit", "99999999TB"], None, "memory limit"),
]
CASES += SEALED_CASES
# ==== end of the sealed-segment block (its ftbench cases are at the end of the file) ===================


# ==== the open segment's records (issue 17 audit: a damaged header, forged records, the quarantine) =====
# A: a flipped byte in a v2 segment's header is damage named by segment and byte, never a v1 segment.
# B: after a repair moved an acknowledged record to the quarantine, verify fails and says how many.
# C: a record that passes its checksum but holds a field of the wrong type or form is damage named by
#    segment and byte, in every command (no TypeError, no DuckDB conversion error).
# D: an import of something that is not a regular file says so.
def _flip_header(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    data = bytearray(seg.read_bytes())
    data[3] ^= 0x01
    seg.write_bytes(bytes(data))


def _quarantined_last(home: Path, tmp: Path | None = None) -> None:
    from trex.events.quarantine import quarantine_damage

    EventLog(home).append("s", [NoteAdded(text="the last one")])
    _flip_last_record(home)
    assert len(quarantine_damage(EventLog(home))) == 1  # what `verify --repair` does first


def _forged(field: str, value):
    def setup(home: Path, tmp: Path | None = None) -> None:
        from trex.events.records import encode_record

        r = dict(EventLog(home).read_records("s")[-1])
        r.update(position=r["position"] + 1, seq=r["seq"] + 1, event_id="forged")
        r[field] = value
        with open(_segment(home), "ab") as f:
            f.write(encode_record([r]))
    return setup


_DEEP = '{"text":"x","author":"","extra":' + "[" * 5000 + "]" * 5000 + "}"
RECORD_CASES = [
    *[(f"log-header-flipped-{cmd[0]}", cmd, _flip_header, "damaged segment header: byte 3")
      for cmd in (["ls"], ["sql", "SELECT count(*) FROM events"], ["note", "s", "more"], ["replay", "s"])],
    ("log-header-flipped-verify", ["verify"], _flip_header, "problem(s)"),
    ("log-header-newer-repair", ["verify", "--repair"], lambda h, t: _write(_segment(h), _segment(h).read_bytes().replace(
        b"trex-log-segment v2", b"trex-log-segment v9", 1)), "newer"),
    ("log-quarantined-verify", ["verify"], _quarantined_last, "1 quarantined record(s) not in the log"),
    *[(f"log-forged-{name}-{cmd[0]}", cmd, _forged(field, value), "damaged record at byte")
      for name, field, value, cmds in [
          ("payload-int", "payload", 5, (["replay", "s"], ["tree", "s"], ["status", "s"], ["note", "s", "x"])),
          ("time", "recorded_at", "2026-13-45T25:61:00Z", (["ls"], ["sql", "SELECT * FROM events"])),
          ("hash-int", "hash", 7, (["tree", "s"],)),
          ("sid-int", "search_id", 12, (["ls"], ["status", "s"])),
          ("payload-list", "payload", "[1,2]", (["replay", "s"],)),
          ("bigint", "seq", 2 ** 70, (["ls"], ["sql", "SELECT max(seq) FROM events"])),
          ("dupkey", "payload", '{"text":"a","text":"b","author":""}', (["sql", "SELECT * FROM notes"],
                                                                        ["replay", "s"])),
          ("deep", "payload", _DEEP, (["note", "s", "x"],)),
      ] for cmd in cmds],
    ("log-forged-hash-int-verify", ["verify"], _forged("hash", 7), "problem(s)"),
    ("import-device", ["import", "/dev/zero"], None, "not a regular file"),
    ("import-fifo", ["import", "{tmp}/pipe"], lambda h, t: os.mkfifo(t / "pipe"), "not a regular file"),
]
CASES += RECORD_CASES
# ==== end of the open-segment record block =============================================================


# ==== crafted imports (issue 17, seventh audit): files whose chain verifies, refused for what they hold ==
def _crafted(name: str, sid: str, events: list[tuple[str, str]]):
    """An export-shaped file of search ``sid`` holding ``events`` ((type, payload JSON)), its hash chain
    right: only its content can be refused."""
    def setup(home: Path, tmp: Path | None = None) -> None:
        from trex.events import segments
        from trex.events.envelope import GENESIS, chain_hash
        from trex.events.transfer import EXPORT_MAGIC

        out, prev = [], GENESIS
        for i, (type_, payload) in enumerate(events, start=1):
            at, eid = "2026-01-01T00:00:00.000000Z", f"{sid}-e{i}"
            h = chain_hash(prev, eid, sid, i, type_, 1, at, None, None, payload)
            out.append(dict(position=i, search_id=sid, seq=i, event_id=eid, type=type_, schema_version=1,
                            recorded_at=at, causation_id=None, correlation_id=None, payload=payload,
                            prev_hash=prev, hash=h))
            prev = h
        segments.write_parquet(tmp / name, out, metadata={EXPORT_MAGIC: sid}, outside=True)
    return setup


def _not_utf8(home: Path, tmp: Path | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(tmp / "s.parquet")
    i = t.schema.get_field_index("event_id")
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.array([0, 2], pa.int32()).buffers()[1], pa.py_buffer(b"\xff\xfe")])
    t = t.slice(0, 1).set_column(i, t.schema.field(i), bad)
    pq.write_table(t.replace_schema_metadata(t.schema.metadata), tmp / "bad.parquet")


_FORK = '{"parent_search_id":"%s","at_seq":%d,"at_node":null,"budget":null}'
CASES += [
    ("import-lone-surrogate", ["import", "{tmp}/sur.parquet"],
     _crafted("sur.parquet", "sur", [("NoteAdded", '{"text":"x","author":"\\ud800"}')]), "surrogate pair"),
    ("import-orphan-fork", ["import", "{tmp}/orph.parquet"],
     _crafted("orph.parquet", "orph", [("SearchForked", _FORK % ("ghost", 1))]), "neither the file nor this home"),
    ("import-fork-past-the-end", ["import", "{tmp}/beyond.parquet"],
     _crafted("beyond.parquet", "beyond", [("SearchForked", _FORK % ("s", 99))]), "past its last event (seq 5)"),
    ("import-self-fork", ["import", "{tmp}/cyc.parquet"],
     _crafted("cyc.parquet", "cyc", [("SearchForked", _FORK % ("cyc", 1))]), "from itself"),
    ("import-not-utf8", ["import", "{tmp}/bad.parquet"], _not_utf8, "Invalid UTF8 sequence"),
    ("note-author-not-utf8", ["note", "s", "ok", "--author", "\udcc3"], None, "its author is not UTF-8 text"),
    ("fork-budget-nan", ["fork", "s", "--at", "n1", "--budget-compute", "nan"], None, "not a finite number"),
]


def _snapshot(home: Path) -> list[tuple]:
    return [(e.search_id, e.seq, e.event_id, e.hash) for e in EventLog(home).read()]


def _files(home: Path) -> dict[str, bytes]:
    """Every file under the log, as bytes (links and folders by what they are, not followed)."""
    out = {}
    for p in sorted((home / "log").rglob("*")):
        key = str(p.relative_to(home))
        out[key] = (b"link:" + os.readlink(p).encode()) if p.is_symlink() else (
            p.read_bytes() if p.is_file() and p.name != "append.lock" else b"dir")
    return out


@pytest.fixture
def hostile_home(tmp_path):
    home = tmp_path / "home"
    log = EventLog(home)
    log.append("s", [NoteAdded(text=f"note {i}") for i in range(5)])
    export_search(log, "s", tmp_path / "s.parquet")
    return home


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clear_refusal_and_loses_nothing(case, hostile_home, tmp_path):
    name, args, setup, needle = case
    before = _snapshot(hostile_home)
    if setup is not None:
        setup(hostile_home, tmp_path)
    damaged = _files(hostile_home)
    argv = [a.format(home=hostile_home, tmp=tmp_path) for a in args]
    env = {**os.environ, "TREX_HOME": str(hostile_home), "TREX_LOCK_TIMEOUT": "2"}
    r = subprocess.run([sys.executable, "-m", "trex.cli", *argv], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    err = r.stderr.strip()
    assert r.returncode != 0, f"{name}: exit 0\n{r.stdout[-500:]}"
    assert "Traceback" not in r.stderr, f"{name}: a traceback\n{r.stderr[-2000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, f"{name}: no message"
    last = lines[-1]
    # click prints usage lines before its one error line; ours is that one line
    assert needle.lower() in last.lower(), f"{name}: {needle!r} not in {last!r}"
    assert len([ln for ln in lines if ln.lower().startswith(("error", "refused"))]) <= 1, f"{name}: {lines}"
    if name.startswith("log-"):  # a damaged log is reported, never rewritten by a command that is not repair
        assert _files(hostile_home) == damaged, f"{name}: the damaged log was changed"
    else:
        assert _snapshot(hostile_home) == before, f"{name}: acknowledged events changed"


# ==== ftbench on damaged homes (issue 17, "Tracebacks"): every command answers in one line ============
def _ftbench_link(home: Path, tmp: Path | None = None) -> None:
    _segment_is_a_link(home, tmp)


FTBENCH_CASES = [
    ("ftbench-report-flipped-record", ["report", "--tag", "x"], _flip_last_record, "segment"),
    ("ftbench-report-garbage", ["report"], _garbage_in_middle, "segment"),
    ("ftbench-report-link", ["report", "--tag", "x"], _ftbench_link, "link"),
    ("ftbench-report-sealed-flip", ["report"], _flip_sealed("dict"), "00000001.parquet"),
    ("ftbench-report-no-home", ["report", "--home", "{tmp}/nowhere"], None, "no trex home"),
    ("ftbench-prepare-unknown", ["prepare", "nope"], None, "unknown task"),
]


@pytest.mark.parametrize("case", FTBENCH_CASES, ids=[c[0] for c in FTBENCH_CASES])
def test_ftbench_on_a_damaged_home_is_one_line_and_changes_nothing(case, hostile_home, tmp_path):
    name, args, setup, needle = case
    if setup is not None:
        setup(hostile_home, tmp_path)
    damaged = _files(hostile_home)
    argv = [a.format(home=hostile_home, tmp=tmp_path) for a in args]
    if "--home" not in argv:
        argv += ["--home", str(hostile_home)]
    r = subprocess.run([sys.executable, "-m", "ftbench.cli", *argv], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "TREX_LOCK_TIMEOUT": "2"}, timeout=120)
    assert r.returncode != 0, f"{name}: exit 0\n{r.stdout[-500:]}"
    assert "Traceback" not in r.stderr, f"{name}: a traceback\n{r.stderr[-2000:]}"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), f"{name}: {lines}"
    assert _files(hostile_home) == damaged, f"{name}: the damaged home was changed"
# ==== end of the ftbench block ========================================================================


# ==== eighth audit: readers' homes, argv that is not UTF-8, SQL output, lock waits, forks ============
CASES_8 = [
    ("ls-no-home", ["ls", "--home", "{tmp}/nowhere"], None, "no trex home"),
    ("status-no-home", ["status", "--home", "{tmp}/nowhere"], None, "no trex home"),
    ("verify-no-home", ["verify", "--home", "{tmp}/nowhere"], None, "no trex home"),
    ("sql-no-home", ["sql", "SELECT 1", "--home", "{tmp}/nowhere"], None, "no trex home"),
    ("sql-query-not-utf8", ["sql", "SELECT '\udcff'"], None, "not UTF-8 text"),
    ("sql-home-not-utf8", ["sql", "SELECT 1", "--home", "{tmp}/h\udcff"],
     lambda h, t: os.mkdir(os.fsencode(t) + b"/h\xff"), "not UTF-8 text"),
    ("ls-home-not-utf8", ["ls", "--home", "{tmp}/h\udcff"],
     lambda h, t: os.mkdir(os.fsencode(t) + b"/h\xff"), "not UTF-8 text"),
]


@pytest.mark.parametrize("case", CASES_8, ids=[c[0] for c in CASES_8])
def test_eighth_audit_bad_input_is_one_clear_refusal(case, hostile_home, tmp_path):
    test_hostile_input_is_one_clear_refusal_and_loses_nothing(case, hostile_home, tmp_path)


def _cli(*argv, env=None, timeout=60, cwd=None):
    return subprocess.run([sys.executable, "-m", "trex.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd)


def test_sql_table_shows_stored_text_as_text_never_as_markup(hostile_home):
    """A note "see [draft] node, x[b]y" showed as "see  node, xy"; one holding "[/bold]" failed every
    table query over notes (MarkupError, exit 70); ['NaN'] showed an empty cell."""
    EventLog(hostile_home).append("s", [NoteAdded(text="see [draft] node, x[b]y"), NoteAdded(text="[/bold]")])
    r = _cli("sql", "SELECT text, 1 AS \"[/x]\", ['NaN'::DOUBLE] AS n FROM notes WHERE text LIKE '%[%'",
             "--home", str(hostile_home))
    assert r.returncode == 0, r.stderr
    assert "see [draft] node, x[b]y" in r.stdout and "[/bold]" in r.stdout and "[/x]" in r.stdout
    assert "[nan]" in r.stdout


def test_sql_table_output_is_bounded_and_says_so(hostile_home):
    """rich lays a table out whole: 100,000 rows took a minute, past --timeout. The table shows the first
    rows and says how many there are; csv prints every row."""
    from trex.commands.log_cmds import TABLE_ROWS

    n = TABLE_ROWS + 500
    r = _cli("sql", f"SELECT range AS i FROM range({n})", "--home", str(hostile_home))
    assert r.returncode == 0, r.stderr
    assert f" {TABLE_ROWS - 1} " in r.stdout and f" {TABLE_ROWS} " not in r.stdout
    assert f"{n} row(s); the table shows the first {TABLE_ROWS}" in r.stderr
    r = _cli("sql", f"SELECT range AS i FROM range({n})", "--format", "csv", "--home", str(hostile_home))
    assert len(r.stdout.splitlines()) == n + 1


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "abc", "-5"])
def test_a_lock_timeout_that_is_not_a_positive_number_is_refused(hostile_home, value):
    """nan, inf and 1e400 waited forever on a held lock; abc failed as a bare ValueError."""
    before = _snapshot(hostile_home)
    r = _cli("note", "s", "more", "--home", str(hostile_home), env={"TREX_LOCK_TIMEOUT": value}, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: TREX_LOCK_TIMEOUT must be a number of seconds, 0 or more, "
                                             f"got {value!r}"]
    assert _cli("ls", "--home", str(hostile_home), env={"TREX_LOCK_TIMEOUT": value}).returncode == 0  # no lock taken
    assert _snapshot(hostile_home) == before


def test_an_append_waiting_on_a_held_lock_says_what_it_waits_for(hostile_home):
    """The default wait (120 s) was silent: a note looked hung. Past a second it says so, once."""
    import fcntl

    fd = os.open(hostile_home / "log" / "append.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = _cli("note", "s", "more", "--home", str(hostile_home), env={"TREX_LOCK_TIMEOUT": "2"}, timeout=30)
    finally:
        os.close(fd)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 2, lines
    assert lines[0].startswith("trex: waiting up to 2 s for the append lock") and "append.lock" in lines[0]
    assert lines[1].startswith("error: waited 2 s for the append lock")


def _forked_chain(log, depth: int) -> str:
    """A root search with one node, and ``depth`` forks each of the one before; returns the deepest id.
    Written with plain appends (not :func:`fork`), so a chain past the limit can be made."""
    from trex.events.plans import PlanProposed
    from trex.events.search import SearchForked, SearchStarted

    log.append("root", [SearchStarted(task="arith-sub"), PlanProposed(node_id="n1", parent_id=None,
                                                                      operator="draft", plan={})])
    parent = "root"
    for i in range(depth):
        sid = f"f{i + 1}"
        log.append(sid, [SearchForked(parent_search_id=parent, at_seq=2 if parent == "root" else 1, at_node="n1")])
        parent = sid
    return parent


def test_a_fork_past_the_depth_a_replay_follows_is_refused_before_anything_is_written(tmp_path):
    """The 65th `trex fork` appended its SearchForked, then said "fork chain deeper than 64", and from then
    on `trex status` failed for every search of the home."""
    from trex.events.search import MAX_FORK_DEPTH, SearchForked
    from trex.search.replay import ReplayError, fork, fork_depth

    log = EventLog(tmp_path / "h")
    deepest = _forked_chain(log, MAX_FORK_DEPTH)
    assert fork_depth(log, deepest) == MAX_FORK_DEPTH
    before = log.read_records()
    with pytest.raises(ReplayError, match="past the 64 a replay follows"):
        fork(log, deepest, "n1", new_search_id="one-more")
    assert log.read_records() == before and not log.exists("one-more")
    with pytest.raises(ReplayError, match="exists already"):  # was "at version 2, expected 0"
        fork(log, "f1", "n1", new_search_id="f2")
    long_id = "L" * 200  # the generated id of a fork of a 200-character search stays a valid id
    log.append(long_id, [SearchForked(parent_search_id="root", at_seq=2, at_node="n1")])
    env = fork(log, long_id, "n1")
    assert env.search_id.startswith("L" * 100) and env.search_id.endswith(env.search_id[-8:])
    assert "~n1~" in env.search_id and len(env.search_id) <= 200
    r = _cli("status", "--home", str(tmp_path / "h"))
    assert r.returncode == 0, r.stderr  # every search of the chain replays


def test_an_import_past_the_fork_depth_is_refused_and_status_lists_the_readable_searches(tmp_path):
    from trex.events.search import MAX_FORK_DEPTH
    from trex.events.transfer import BadImportFile, export_search, import_file

    src = EventLog(tmp_path / "src")
    deepest = _forked_chain(src, MAX_FORK_DEPTH + 1)
    export_search(src, deepest, tmp_path / "deep.parquet")
    dst = EventLog(tmp_path / "dst")
    dst.append("other", [NoteAdded(text="x")])
    before = dst.read_records()
    with pytest.raises(BadImportFile, match=f"more than {MAX_FORK_DEPTH} forks"):
        import_file(dst, tmp_path / "deep.parquet")
    assert dst.read_records() == before
    # a home that holds such a chain (written before this check): status lists the others and says which failed
    r = _cli("status", "--home", str(tmp_path / "src"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "root\t" in r.stdout and "f1\t" in r.stdout
    assert f"search '{deepest}' cannot be replayed" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: 1 search(es) could not be replayed")


def test_a_second_import_of_the_same_events_says_it_added_none(tmp_path):
    """Two imports of one file at once both printed "224 events added": the second had planned them
    before the lock and found them stored under it. What an import reports is what it wrote."""
    from trex.events.envelope import RawEvent

    log = EventLog(tmp_path / "h")
    raws = [RawEvent(f"e{i}", "NoteAdded", 1, json.dumps({"text": f"n{i}", "author": ""}), "2026-12-07T00:00:00Z",
                     None, None) for i in range(3)]
    first, second = {}, {}
    log.append_streams([("s", raws, 0)], written=first)
    log.append_streams([("s", raws, 0)], written=second)  # planned against version 0, all stored meanwhile
    assert first == {"s": 3} and second == {"s": 0} and log.version("s") == 3


def test_an_llm_call_the_model_allows_but_the_view_cannot_hold_reads_as_null(tmp_path):
    """An imported attempt of 3,000,000,000 made every query over llm_calls fail (CAST to INTEGER)."""
    from trex.events.plans import LlmCallMade
    from trex.search.views import query

    log = EventLog(tmp_path / "h")
    log.append("s", [LlmCallMade(call_id="c1", purpose="choose", backend="b", model="m", prompt_hash="h",
                                 response="r", attempt=3_000_000_000, prompt_tokens=2**64),
                     LlmCallMade(call_id="c2", purpose="choose", backend="b", model="m", prompt_hash="h",
                                 response="r", attempt=2, prompt_tokens=5)])
    res = query(tmp_path / "h", "SELECT call_id, attempt, prompt_tokens FROM llm_calls ORDER BY call_id")
    assert [tuple(r) for r in res.rows] == [("c1", 3_000_000_000, None), ("c2", 2, 5)]


def test_a_report_whose_best_adapter_is_not_an_artifact_hash_says_so_in_one_line(tmp_path, capsys):
    """An imported TrialFinished naming "../../../etc/passwd" as its adapter: `trex resume` ended in
    "error: ArtifactError" (exit 70). The name is never used as a path; the report says it cannot look it up."""
    from trex.commands.run_cmds import _report
    from trex.events.evaluation import EvaluationFinished, MetricRecorded
    from trex.events.plans import PlanProposed
    from trex.events.search import SearchStarted
    from trex.events.trials import TrialFinished, TrialStarted
    from trex.search import fold

    tree = fold([SearchStarted(task="arith-sub"), PlanProposed(node_id="n1", parent_id=None, operator="draft",
                                                               plan={}),
                 TrialStarted(node_id="n1", trial_id="t1"),
                 TrialFinished(node_id="n1", trial_id="t1", adapter="../../../etc/passwd"),
                 MetricRecorded(node_id="n1", name="exact_match", value=0.5, primary=True),
                 EvaluationFinished(node_id="n1", eval_id="e1", backend="cpu", n_examples=1)])
    _report(tmp_path, "s", tree, "json")
    out = capsys.readouterr()
    assert json.loads(out.out)["adapter"] is None
    assert "the best adapter cannot be looked up: not an artifact hash" in out.err
# ==== end of the eighth-audit block ====================================================================
