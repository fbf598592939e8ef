"""A process that appends forever and records what was acknowledged; killed with SIGKILL by the crash test.

Before each append it writes the batch to a pending file; on start it first retries
the pending batch (the same event ids), as a real client would after a crash.
"""
from __future__ import annotations

import json
import os
import random
import sys
import uuid

from trex.events import log as logmod
from trex.events.envelope import NewEvent
from trex.events.log import EventLog
from trex.events.notes import NoteAdded


def main(home: str, name: str, workdir: str, seal_events: int) -> None:
    logmod.SEAL_EVENTS = seal_events
    log = EventLog(home)
    pending = os.path.join(workdir, f"{name}.pending")
    acks = open(os.path.join(workdir, f"{name}.acks"), "a")
    rng = random.Random()
    log.repair()  # catch up with the log (and load what appends need) before saying ready
    open(os.path.join(workdir, f"{name}.ready"), "w").close()
    while True:
        batch = None
        if os.path.exists(pending):
            try:
                with open(pending) as f:
                    batch = json.load(f)
            except ValueError:
                batch = None  # torn pending file: that batch was never sent
        if batch is None:
            batch = [uuid.uuid4().hex for _ in range(rng.randint(1, 5))]
            tmp = pending + ".tmp"
            with open(tmp, "w") as f:
                json.dump(batch, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, pending)
        log.append(name, [NewEvent(NoteAdded(text=i), event_id=i) for i in batch])
        acks.write(" ".join(batch) + "\n")
        acks.flush()
        os.unlink(pending)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
