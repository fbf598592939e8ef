"""Worker process entry point: ``python -m trex.train.worker SPEC.json``.

One trial per process, so a crash, OOM or NaN ends only that trial. The exit code
tells the parent what happened (0 ok, 3 nan_loss, 4 oom, 5 bad_plan, else crash);
the progress file carries the details.
"""
from __future__ import annotations

import json
import sys
import traceback


def _exit_with_parent() -> None:
    """End this worker when the process that started it is gone (no orphaned training)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(71)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    _exit_with_parent()
    from trex.train.loop import EXIT_BAD_PLAN, EXIT_NAN, EXIT_OOM, NanLoss, Reporter, WorkerSpec, run

    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = WorkerSpec.model_validate(json.load(f))
    report = Reporter(spec.progress_path)
    try:
        run(spec, report)
        return 0
    except NanLoss as e:
        report("failed", reason="nan_loss", message=str(e))
        return EXIT_NAN
    except MemoryError as e:
        report("failed", reason="oom", message=f"MemoryError: {e}")
        return EXIT_OOM
    except Exception as e:  # noqa: BLE001
        name = type(e).__name__
        if "OutOfMemory" in name or "out of memory" in str(e).lower():
            report("failed", reason="oom", message=f"{name}: {e}")
            return EXIT_OOM
        from pydantic import ValidationError

        if isinstance(e, ValidationError):
            report("failed", reason="bad_plan", message=str(e))
            return EXIT_BAD_PLAN
        traceback.print_exc()
        report("failed", reason="crash", message=f"{name}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
