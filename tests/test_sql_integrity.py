"""Sealed segments through the SQL path (issue 17, "Silent prefixes"): DuckDB does not verify Parquet
page checksums, so a damaged sealed segment was read as other data with exit 0. Now a damaged
segment fails the query with one line naming it, or — if the damage changes nothing DuckDB reads —
the answer is exactly the undamaged one; never silently different data."""
from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trex.events import fsio, segments, sql
from trex.events.envelope import chain_hash
from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.sql import SqlFailed, SqlRefused, check_limits, query
from trex.events.verify import verify

QUERIES = [
    "SELECT * FROM events ORDER BY position",
    "SELECT search_id, seq, event_id FROM events WHERE search_id = 's' ORDER BY seq",  # pruned by statistics
    "SELECT count(*), max(seq) FROM events WHERE seq > 2",
]


def _home(path, n=12):
    log = EventLog(path)
    log.append("s", [NoteAdded(text=f"note {i} é ☃") for i in range(n)])
    log.append("t", [NoteAdded(text="other")])
    log.seal()
    log.append("s", [NoteAdded(text="open")])  # and an open segment after it
    return path, next((path / "log" / "segments").glob("*.parquet"))


def _answers(home):
    return [query(home, q).rows for q in QUERIES]


def test_the_sql_hash_is_the_logs_hash():
    import duckdb

    con = duckdb.connect()
    for args in [("p" * 64, "e\u0301x", "s", 3, "T", 2, "2020-01-01T00:00:00Z", None, "c😀", '{"a":"é\\n"}'),
                 ("0" * 64, "id", "search-1", 12345678901, "NoteAdded", 1, "t", "x", None, "{}")]:
        got = con.execute(f"SELECT {sql._HASH_SQL} FROM (SELECT ?::VARCHAR AS prev_hash, ?::VARCHAR AS event_id, "
                          "?::VARCHAR AS search_id, ?::BIGINT AS seq, ?::VARCHAR AS type, ?::INTEGER AS schema_version, "
                          "?::VARCHAR AS recorded_at, ?::VARCHAR AS causation_id, ?::VARCHAR AS correlation_id, "
                          "?::VARCHAR AS payload)", list(args)).fetchone()[0]
        assert got == chain_hash(*args)


def test_sealing_records_a_digest_that_sql_checks(tmp_path):
    home, seg = _home(tmp_path / "h")
    assert fsio.read_digest(seg) == fsio.sha256_file(seg)
    good = query(home, QUERIES[0])
    assert len(good.rows) == 14 and good.notes == ()
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(SqlFailed, match=r"^segment 00000001\.parquet: damaged: its bytes do not match the digest"):
        query(home, QUERIES[0])
    # the log's own readers and verify see it too (no silent read through a statistic either)
    with pytest.raises(segments.CorruptSegment, match="00000001.parquet"):
        EventLog(home).read("s")
    assert verify(EventLog(home)).problems[0].kind == "corrupt_segment"


def test_an_old_home_without_digests_still_reads_says_so_and_repair_records_them(tmp_path):
    from click.testing import CliRunner

    from trex.commands.log_cmds import ls, verify as verify_cmd

    home, seg = _home(tmp_path / "h")
    want = _answers(home)
    fsio.digest_path(seg).unlink()  # as sealed by a trex from before digests
    sql._CHECKED.clear()
    res = query(home, QUERIES[0])
    assert res.rows == want[0] and "checked whole" in res.notes[0] and "trex verify --repair" in res.notes[0]
    r = CliRunner().invoke(ls, ["--home", str(home)])
    assert r.exit_code == 0 and "s\t13" in r.output
    r = CliRunner().invoke(verify_cmd, ["--repair", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert fsio.read_digest(seg) == fsio.sha256_file(seg)
    sql._CHECKED.clear()
    res = query(home, QUERIES[0])
    assert res.rows == want[0] and res.notes == ()


def test_repair_gives_no_digest_to_a_damaged_old_segment(tmp_path):
    home, seg = _home(tmp_path / "h")
    fsio.digest_path(seg).unlink()
    import pyarrow.parquet as pq

    rg = pq.read_metadata(seg).row_group(0)
    c = next(rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema == "payload")
    data = bytearray(seg.read_bytes())
    data[(c.dictionary_page_offset or c.data_page_offset) + 40] ^= 0x10  # in the payloads' compressed text
    seg.write_bytes(bytes(data))
    done, damaged = segments.record_digests(seg.parent, [1], skip_damaged=True)
    assert done == [] and not fsio.digest_path(seg).exists() and "00000001.parquet" in damaged[0]
    with pytest.raises(segments.CorruptSegment):
        segments.record_digests(seg.parent, [1])


def test_a_damaged_digest_file_falls_back_to_the_whole_check(tmp_path):
    home, seg = _home(tmp_path / "h")
    want = _answers(home)
    fsio.digest_path(seg).write_bytes(b"sha256 nonsense\n")
    sql._CHECKED.clear()
    res = query(home, QUERIES[0])
    assert res.rows == want[0] and "checked whole" in res.notes[0]


def test_a_digest_file_that_is_a_link_is_refused(tmp_path):
    home, seg = _home(tmp_path / "h")
    d = fsio.digest_path(seg)
    (tmp_path / "elsewhere").write_bytes(d.read_bytes())
    d.unlink()
    d.symlink_to(tmp_path / "elsewhere")
    sql._CHECKED.clear()
    with pytest.raises(SqlFailed, match="symbolic link"):
        query(home, QUERIES[0])


@pytest.mark.parametrize("limit", ["99999999TB", "100000TiB", "65TiB"])
def test_absurd_memory_limits_are_refused(limit):
    with pytest.raises(SqlRefused, match="memory limit .* is above"):
        check_limits(5.0, limit)


def test_a_memory_limit_that_cannot_be_set_is_one_line(tmp_path, monkeypatch):
    import resource

    def boom(*_a):
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(resource, "setrlimit", boom)  # the forked child inherits the patch
    with pytest.raises(SqlFailed, match="cannot cap the query's memory"):
        sql.query_isolated(tmp_path, "SELECT 1", timeout_s=20)


# ------------------------------------------------------------------ the property
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    home, seg = _home(tmp_path_factory.mktemp("pristine") / "h", n=30)
    return home, seg, seg.read_bytes(), _answers(home)


def _damage_strategy(size):
    return st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=3)


@pytest.mark.parametrize("with_digest", [True, False], ids=["digest", "no-digest"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damage_to_a_sealed_segment_fails_naming_it_or_changes_nothing(pristine, tmp_path, with_digest, data):
    home0, seg0, orig, want = pristine
    home = tmp_path / f"h{with_digest}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(home0, home)
    seg = home / "log" / "segments" / seg0.name
    if not with_digest:
        fsio.digest_path(seg).unlink()
    damage = data.draw(_damage_strategy(len(orig)))
    bad = bytearray(orig)
    for off, x in damage:
        bad[off] ^= x
    seg.write_bytes(bytes(bad))
    for q, good in zip(QUERIES, want):
        try:
            rows = query(home, q).rows
        except SqlFailed as e:
            msg = str(e)
            assert msg.startswith(f"segment {seg.name}: damaged") and "\n" not in msg, msg
            continue
        assert rows == good, (damage, q)  # never silently different


def test_a_fifo_or_folder_where_a_segment_or_its_digest_should_be_is_refused_never_opened(tmp_path):
    """A FIFO under a segment's name, or under its digest's, would hang every reader that opened it: the
    listing refuses what is not a regular file, and a digest that is not one is unreadable, by name."""
    import os

    import pytest

    from trex.events.errors import EventError
    from trex.events.fsio import DigestUnreadable, digest_path, read_digest
    from trex.events.layout import listing

    segs = tmp_path / "segments"
    segs.mkdir()
    os.mkfifo(segs / "00000002.parquet")
    with pytest.raises(EventError, match="00000002.parquet is not a regular file"):
        listing(segs)
    os.unlink(segs / "00000002.parquet")
    (segs / "00000003.parquet").mkdir()
    with pytest.raises(EventError, match="not a regular file"):
        listing(segs)
    seg = segs / "00000004.parquet"
    seg.write_bytes(b"x")
    os.mkfifo(digest_path(seg))
    with pytest.raises(DigestUnreadable, match="not a regular file"):
        read_digest(seg)


def test_absurd_limits_and_path_like_tags_are_refused_in_one_line(tmp_path):
    import pytest
    from click.testing import CliRunner

    from ftbench.cli import main as ftbench
    from trex.events.sql import SqlRefused, check_limits

    with pytest.raises(SqlRefused, match="give a size"):
        check_limits(5.0, "9" * 400 + "TB")  # a float infinity before: OverflowError, a traceback
    r = CliRunner().invoke(ftbench, ["report", "--home", str(tmp_path), "--tag", "../../escape"])
    assert r.exit_code == 1 and "--tag" in r.output and not (tmp_path.parent / "escape").exists()


def _old_home_with_footer_damage(path, damage):
    """A home whose one sealed segment has no digest (sealed by a trex from before digests) and whose
    footer was damaged where no page checksum looks: ``damage`` is a function of the footer's bytes."""
    log = EventLog(path)
    log.append("search-aaaa", [NoteAdded(text=f"a{i}") for i in range(5)])
    log.append("search-zzzz", [NoteAdded(text=f"z{i}") for i in range(3)])
    log.seal()
    seg = next((path / "log" / "segments").glob("*.parquet"))
    fsio.digest_path(seg).unlink()
    data = bytearray(seg.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    footer = bytes(data[start:-8])
    new = damage(footer)
    assert new != footer and len(new) == len(footer)
    data[start:-8] = new
    seg.write_bytes(bytes(data))
    segments._CHECKED.clear()
    sql._CHECKED.clear()
    return seg


def _renamed_in_seq_ranges(footer):  # readers skip the segment for search-aaaa by this key
    return footer.replace(b'"search-aaaa":[', b'"search-aaab":[')


def _min_statistic_raised(footer):  # pyarrow/DuckDB prune the row group for search-aaaa by it
    import re

    return re.sub(rb'(?<!")search-aaaa', b"search-aaab", footer)


@pytest.mark.parametrize("damage", [_renamed_in_seq_ranges, _min_statistic_raised], ids=["seq-ranges-key", "statistic"])
def test_footer_damage_of_a_segment_without_digest_is_never_read_as_fewer_events(tmp_path, damage):
    """A reader that trusted the footer of a digest-less segment lost events with exit 0, verify said OK
    and repair recorded a digest over the damage (issue 17's re-audit). Now the segment is checked whole
    before its footer prunes anything."""
    from click.testing import CliRunner

    from trex.commands.log_cmds import verify as verify_cmd

    home = tmp_path / "h"
    seg = _old_home_with_footer_damage(home, damage)
    with pytest.raises(segments.CorruptSegment, match=r"segment 00000001\.parquet: damaged"):
        EventLog(home).read("search-aaaa")
    count = "SELECT count(*) FROM events WHERE search_id = 'search-aaaa'"
    if damage is _renamed_in_seq_ranges:  # DuckDB never reads trex's own footer key: the answer is whole
        assert query(home, count).rows == [(5,)]
    else:
        with pytest.raises(SqlFailed, match=r"segment 00000001\.parquet: damaged"):
            query(home, count)
    assert [p.kind for p in verify(EventLog(home)).problems] == ["corrupt_segment"]
    r = CliRunner().invoke(verify_cmd, ["--repair", "--home", str(home)])
    assert r.exit_code == 1 and "segment 00000001.parquet: damaged" in r.output and "Traceback" not in r.output
    assert not fsio.digest_path(seg).exists()  # no digest over damage


def test_a_damaged_digest_file_is_a_finding_and_repair_records_it_again(tmp_path):
    from click.testing import CliRunner

    from trex.commands.log_cmds import verify as verify_cmd

    home, seg = _home(tmp_path / "h")
    want = EventLog(home).read("s")
    fsio.digest_path(seg).write_bytes(b"sha256 0123\n")  # truncated
    segments._CHECKED.clear()
    assert EventLog(home).read("s") == want  # readers check the segment whole instead
    rep = verify(EventLog(home))
    assert [p.kind for p in rep.problems] == ["corrupt_digest"] and "00000001.parquet" in rep.problems[0].where
    r = CliRunner().invoke(verify_cmd, ["--repair", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert fsio.read_digest(seg) == fsio.sha256_file(seg)


def _flip_in_footer(seg, pattern: bytes, at: int):
    """Flip the low bit of the byte ``at`` bytes into the footer's only match of ``pattern``."""
    data = bytearray(seg.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    i = bytes(data).find(pattern, start)
    assert i >= 0 and bytes(data).find(pattern, i + 1) < 0, "the writer's footer layout changed"
    data[i + at] ^= 0x01
    seg.write_bytes(bytes(data))


@pytest.mark.parametrize("column", ["hash", "payload", "search_id"])
def test_a_footer_flip_that_makes_duckdb_read_text_as_blob_gets_no_digest(tmp_path, column):
    """One bit of a string column's converted type in the footer (the re-audit): pyarrow reads the Arrow
    schema stored beside it and saw nothing; DuckDB read the column as BLOB. `verify --repair` recorded a
    digest over it, and from then on `trex ls` and `trex sql` answered b'…' values with exit 0."""
    from click.testing import CliRunner

    from trex.commands.log_cmds import verify as verify_cmd

    home, seg = _home(tmp_path / "h")
    fsio.digest_path(seg).unlink()
    _flip_in_footer(seg, bytes([0x18, len(column)]) + column.encode() + b"%\x00L", 2 + len(column))
    segments._CHECKED.clear()
    sql._CHECKED.clear()
    with pytest.raises(SqlFailed, match=rf"00000001\.parquet: damaged: its columns are not the log's \(DuckDB reads {column} BLOB\)"):
        query(home, QUERIES[0])
    assert [p.kind for p in verify(EventLog(home)).problems][:1] == ["corrupt_segment"]
    r = CliRunner().invoke(verify_cmd, ["--repair", "--home", str(home)])
    assert r.exit_code == 1 and "DuckDB reads" in r.output and not fsio.digest_path(seg).exists()


def test_a_footer_flip_of_a_chunks_physical_type_is_one_line_not_an_abort(tmp_path):
    """pyarrow calls std::terminate when it reads the statistics of a column chunk whose type disagrees
    with the schema: every reader of the segment died with SIGABRT. Checked by a child process, so
    that the test process survives the defect it tests."""
    import subprocess
    import sys

    home, seg = _home(tmp_path / "h")
    fsio.digest_path(seg).unlink()
    _flip_in_footer(seg, b"\x15\x0c\x19\x35\x00\x06\x10\x19\x18\x09search_id", 1)  # BYTE_ARRAY -> UNKNOWN
    code = ("import sys; from trex.events.log import EventLog; from trex.events.base import EventError\n"
            "try:\n    EventLog(sys.argv[1]).read('s')\nexcept EventError as e:\n    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr[-500:])
    assert "00000001.parquet: damaged: column search_id's chunk is of type UNKNOWN" in r.stdout


def test_a_home_whose_path_is_a_file_pattern_is_refused_by_sql_and_still_checked_whole(tmp_path):
    """DuckDB expands *, ?, [ ] in read_parquet paths: a home named 'h*' read another home's segments."""
    _home(tmp_path / "hX")
    home, seg = _home(tmp_path / "h*")
    fsio.digest_path(seg).unlink()
    with pytest.raises(SqlFailed, match="holds a character DuckDB reads as a file pattern"):
        query(home, QUERIES[0])
    segments._CHECKED.clear()
    assert len(EventLog(home).read("s")) == 13 and verify(EventLog(home)).ok  # its own bytes, checked whole


def test_a_statistic_left_with_one_bound_is_damage_not_a_skipped_check(tmp_path):
    """One bit turned the seq column's max_value field into a second min_value: DuckDB saw min 12 and
    no max, judged `seq > 2` always true and returned rows that fail it (exit 0), and the whole check
    skipped a column whose statistics lacked a bound; repair then recorded a digest over it."""
    home, seg = _home(tmp_path / "h")
    fsio.digest_path(seg).unlink()
    want = query(home, "SELECT count(*) FROM events WHERE seq > 2").rows
    data = bytearray(seg.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    pattern = b"\x28\x08" + (12).to_bytes(8, "little") + b"\x18\x08" + (1).to_bytes(8, "little")  # max_value 12, min_value 1
    found = [i for i in range(start, len(data)) if bytes(data[i:i + len(pattern)]) == pattern]
    assert found, "the writer's footer layout changed"
    for i in found:
        data[i] ^= 0x10  # field 5 (max_value) -> field 6 (min_value)
    seg.write_bytes(bytes(data))
    sql._CHECKED.clear()
    segments._CHECKED.clear()
    with pytest.raises(SqlFailed, match=r"00000001\.parquet: damaged: the statistics of column seq"):
        query(home, "SELECT count(*) FROM events WHERE seq > 2")
    done, damaged = segments.record_digests(seg.parent, [1], skip_damaged=True)
    assert done == [] and damaged and not fsio.digest_path(seg).exists()
    assert want == [(11,)]


def test_a_digest_recorded_over_a_footer_duckdb_misreads_no_longer_vouches_for_it(tmp_path):
    """Homes repaired by the trex before the DuckDB check: a digest over text columns DuckDB reads as
    BLOB. The column types are checked from the footers of every segment, digest or not."""
    home, seg = _home(tmp_path / "h")
    _flip_in_footer(seg, bytes([0x18, 7]) + b"payload" + b"%\x00L", 2 + 7)
    fsio.write_digest(seg, fsio.sha256_of(seg.read_bytes()), seg.stat().st_size)  # as the older repair did
    sql._CHECKED.clear()
    with pytest.raises(SqlFailed, match=r"00000001\.parquet: damaged: its columns are not the log's \(payload is BYTE_ARRAY/None"):
        query(home, QUERIES[0])
    assert "corrupt_segment" in [p.kind for p in verify(EventLog(home)).problems]


@pytest.mark.parametrize("damage", ["raise_min", "one_bound"])
def test_the_statistics_of_every_row_group_are_checked_not_only_a_single_groups(tmp_path, damage):
    """A sealed segment of more than one row group (a seal of over 65,536 events: one big append or
    import; every full segment of the first trex) without a digest: the whole check returned early and
    a damaged statistic of the second group made `seq = 8` answer 0 rows, exit 0 (and, with one bound,
    verify said OK and repair recorded a digest over it)."""
    import pyarrow.parquet as pq

    home = tmp_path / "h"
    log = EventLog(home)
    log.append("s", [NoteAdded(text=f"note {i}") for i in range(14)])
    log.seal()
    seg = next((home / "log" / "segments").glob("*.parquet"))
    table = pq.read_table(seg)
    with open(seg, "wb") as f:  # the same segment, as the writer would have split a big one: two groups
        pq.write_table(table, f, compression="zstd", write_page_checksum=True, row_group_size=7)
    fsio.digest_path(seg).unlink()
    assert pq.ParquetFile(seg).metadata.num_row_groups == 2
    sql._CHECKED.clear()
    segments._CHECKED.clear()
    q = "SELECT count(*) FROM events WHERE seq = 8"
    assert query(home, q).rows == [(1,)] and verify(EventLog(home)).ok  # two groups, undamaged: read
    data = bytearray(seg.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    pattern = b"\x28\x08" + (14).to_bytes(8, "little") + b"\x18\x08" + (8).to_bytes(8, "little")  # group 2's seq
    found = [i for i in range(start, len(data)) if bytes(data[i:i + len(pattern)]) == pattern]
    assert len(found) == 2, "the writer's footer layout changed"  # position's, then seq's (both 8..14)
    at = found[-1]
    if damage == "one_bound":
        data[at] ^= 0x10  # max_value -> a second min_value
    else:
        data[at + 12:at + 20] = (9).to_bytes(8, "little")  # min 8 -> 9: DuckDB skips seq 8
    seg.write_bytes(bytes(data))
    sql._CHECKED.clear()
    segments._CHECKED.clear()
    with pytest.raises(SqlFailed, match=r"00000001\.parquet: damaged: the statistics of column seq \(row group 1\)"):
        query(home, q)
    assert not verify(EventLog(home)).ok
    done, damaged = segments.record_digests(seg.parent, [1], skip_damaged=True)
    assert done == [] and damaged and not fsio.digest_path(seg).exists()
