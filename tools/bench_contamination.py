"""The contamination guard's cost: N training rows against val + test rows, cold and cached.

    python tools/bench_contamination.py [--train 100000] [--heldout 10000] [--words 20]

Rows are an instruction template shared by every row plus ``--words`` random words (a 5,000-word
vocabulary), so the template filter, the exact checks and the n-gram fractions all do real work;
1% of the training rows are planted test prompts (the report must refuse them).
"""
from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time

from trex.tasks.contamination import check_overlap

TEMPLATE = "Answer the question below in one short sentence, citing nothing.\nQuestion:"


def rows(n: int, rng: random.Random, vocab: list[str], words: int) -> list[dict]:
    return [{"prompt": f"{TEMPLATE} {' '.join(rng.choices(vocab, k=words))}?\nAnswer:",
             "completion": f" {rng.choice(vocab)}"} for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--heldout", type=int, default=10_000)
    ap.add_argument("--words", type=int, default=20)
    a = ap.parse_args()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    half = a.heldout // 2
    held = {"val": rows(half, rng, vocab, a.words), "test": rows(a.heldout - half, rng, vocab, a.words)}
    train = rows(a.train - a.train // 100, rng, vocab, a.words) + held["test"][: a.train // 100]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        cold = check_overlap(train, held, cache_dir=d)
        t1 = time.perf_counter()
        warm = check_overlap(train, held, cache_dir=d)
        t2 = time.perf_counter()
        given = check_overlap(train, held, cache_dir=d, train_hash=cold.train_hash)
        t3 = time.perf_counter()
    assert warm == cold == given and cold.refused
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.train} training rows vs {a.heldout} val+test rows, {a.words}+{len(TEMPLATE.split()) + 1} words a prompt")
    print(f"cold:                         {t1 - t0:7.3f} s")
    print(f"cached (rows hashed again):   {t2 - t1:7.3f} s")
    print(f"cached (training hash given): {t3 - t2:7.3f} s")
    print(f"peak RSS {rss:.0f} MiB; verdict: {cold.reason}")


if __name__ == "__main__":
    main()
