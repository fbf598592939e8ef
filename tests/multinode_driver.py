"""The multi-node test's driver (run as a process on the "head" side; argv: ADDRESS HOME SID TRIALS STEPS
[TASK_FILE]).

Prepares the task here (arith-sub, or a user's task file installed in the home: the Conductor
publishes it, its data and its base model folder to the artifact store), starts the search,
places the executors and the Researcher on the nodes with the ``worker`` resource, pins the
Conductor (and so the log service) to this node, and prints one JSON line: the search's summary
and the node each actor ran on."""
from __future__ import annotations

import json
import sys


def main() -> None:
    address, home, sid, trials, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    from trex.actors.conduct import spawn_pool
    from trex.actors.runtime import init_ray
    from trex.actors.shells import remote_classes
    from trex.conductor import SearchConfig, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget
    from trex.tasks import get_task, prepare_task

    ray = init_ray(home, address=address)
    if len(sys.argv) > 6:  # a user's task: its files are where only this node can read them
        from trex.tasks import install_task, load_task_file

        task = load_task_file(sys.argv[6])
        install_task(task, home)
        extra = {"task_def": task.model_dump(mode="json")}
    else:
        task, extra = get_task("arith-sub", home), {}
    prepare_task(task, home)
    log = EventLog(home)
    if not log.exists(sid):
        start_search(log, SearchConfig(task=task.name, proposer="random", budget=Budget(max_trials=trials),
                                       trial_steps=steps, batch_size=32, eval_limit=20, parallel=2,
                                       trial_time_limit_s=300, extra=extra), search_id=sid)
    pool = spawn_pool(2, threads=1, resources={"worker": 0.01})
    # the Conductor (and so the log service it starts) on the head, where the home is. By resource,
    # not by this driver's node: with three raylets on 127.0.0.1 a driver may attach to any of them
    conductor = remote_classes()["conductor"].options(resources={"head": 0.01}).remote()
    here = ray.get(conductor.node.remote())
    summary = ray.get(conductor.run.remote(home, sid, pool.as_dict()), timeout=600)
    nodes = {"driver": here, "researcher": ray.get(pool.researcher.node.remote()),
             "executors": [ray.get(e.node.remote()) for e in pool.executors],
             "where": [ray.get(e.where.remote(home)) for e in pool.executors]}
    for h in [pool.researcher, pool.evaluator, pool.distiller, *pool.executors, conductor]:
        ray.kill(h, no_restart=True)
    print(json.dumps({"summary": summary, "nodes": nodes}))


if __name__ == "__main__":
    main()
