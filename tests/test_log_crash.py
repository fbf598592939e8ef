"""kill -9 appending processes many times; every acknowledged event must be there exactly once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from trex.events.log import EventLog
from trex.events.verify import verify

ROUNDS = 12
WORKERS = 3


def test_kill_dash_nine_loses_no_acknowledged_event(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    names = [f"w{i}" for i in range(WORKERS)]
    for _ in range(ROUNDS):
        for n in names:
            (work / f"{n}.ready").unlink(missing_ok=True)
        procs = [
            subprocess.Popen([sys.executable, "-m", "tests.crash_appender", str(home), n, str(work), "40"], env=env)
            for n in names
        ]
        deadline = time.time() + 60
        while not all((work / f"{n}.ready").exists() for n in names) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 0.8))
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
    log = EventLog(home)
    log.repair()  # drop a torn tail, if the last kill left one
    report = verify(log)
    assert report.ok, [str(p) for p in report.problems]
    stored = Counter(e.event_id for e in log.read())
    assert stored and max(stored.values()) == 1
    acked = 0
    for n in names:
        text = (work / f"{n}.acks").read_text()
        lines = text.split("\n")[:-1]  # the last piece may be a torn line
        ids = [i for line in lines for i in line.split()]
        acked += len(ids)
        missing = [i for i in ids if i not in stored]
        assert not missing, f"{len(missing)} acknowledged events of {n} are gone"
        seqs = [e.seq for e in log.read(n)]
        assert seqs == list(range(1, len(seqs) + 1))
    assert acked > 50, "the workers barely appended anything; the test proves nothing"
    assert any(p.suffix == ".parquet" for p in log.segdir.iterdir()), "no segment was sealed during the test"
