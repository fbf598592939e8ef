"""Seeded generators for three arith tasks where the *data*, not the hyperparameters, is the bottleneck.

All three run on the ~1M-parameter char-level arith base model (:mod:`ftbench.arith`, pretrained on
2-digit addition; vocabulary: digits, ``+ - = `` space and newline) and keep the arith-sub
conventions: rows are ``{"prompt": "52-17=", "completion": "35"}``, operands 0..99, ``a >= b``.
Each generator returns ``{split name: rows}``; splits named ``pool_*`` are extra training data a
recipe may mix in, ``eval*`` are validation (what a search selects on), ``test*`` are held out.

* :func:`arith_sub_retain` — arith-sub (learn subtraction) under a retention constraint (addition
  exact match on ``eval_add`` must stay high), plus ``pool_add``: addition rows disjoint from
  ``eval_add`` and ``test_add``. Fine-tuning on subtraction alone forgets addition; mixing the pool
  in keeps it, at some cost in subtraction.
* :func:`arith_sub_noisy` — subtraction whose train split has wrong labels: by default
  (``kind="random"``) a seeded 40% of the rows carry a uniformly drawn wrong answer in 0..99 (the
  correct answer stays every problem's most frequent label by far); ``pool_clean`` is a small
  set of correct rows on other pairs. Levers: drop the rows a first adapter finds hardest
  (loss-based cleaning), mix the clean pool in. ``kind="borrow"`` is the systematic variant
  (in every (units of a, units of b) cell of the borrow problems, a share ``noise`` < 0.5 carries
  the forgot-to-borrow answer ``a - b + 10``: ``52-17=45``); measured on the arith base model it
  does not hurt at 0.42 (greedy decoding follows the majority label), and near 0.5, where it
  hurts, the loss no longer tells the wrong rows from the right ones (docs/results/headroom).
* :func:`arith_sub_shift` — train in ``a-b=``, validate and test in a one-shot format (``1-1=0``, a
  newline, then ``a-b=``: a worked example first; the base model and a model tuned on ``a-b=`` do not
  transfer to it); ``pool_target`` is a small set in the target format, and the task offers training
  templates, one of which (``"1-1=0\n{prompt}"``) rewrites the train split into the target format.
  Every row also carries its operands as fields ``a`` and ``b`` (strings). ``eval_src`` is the
  validation pairs in the training format (a diagnostic: the model learned subtraction, it does
  not transfer). The first design's target, ``{a} - {b} =`` (:data:`SPACED_FORMAT`), needed a
  template without ``{prompt}``, which a recipe refuses: it is kept as an option of the generator.

The subtraction tasks keep arith-sub's seeded pair order (``arith-sub-<seed>``): their ``eval`` and
``test`` pairs are arith-sub's, and every pool comes out of arith-sub's 4,000 train pairs (train
shrinks by the pool's size), so no two splits of a task share a pair. Pure python, deterministic,
no global state.
"""
from __future__ import annotations

import random

from ftbench.arith import (N_SUB_EVAL, N_SUB_TRAIN, add_example, addition_split, addition_test, sub_example,
                           subtraction_split, subtraction_test)

N_POOL_ADD = 2000
N_POOL_CLEAN = 200
N_POOL_TARGET = 250
NOISE = 0.4
BORROW_NOISE = 0.42
SHIFT_FORMAT = "1-1=0\n{a}-{b}="  # the target format: a worked example, then the problem
SPACED_FORMAT = "{a} - {b} ="  # the first design's target; its only lever was a template without {prompt}


def _sub_pairs(seed: int) -> list[tuple[int, int]]:
    """arith-sub's seeded order of the 5,050 pairs (a >= b): eval, then train, then test."""
    pairs = [(a, b) for a in range(100) for b in range(a + 1)]
    random.Random(f"arith-sub-{seed}").shuffle(pairs)
    return pairs


def _train_and_pool(seed: int, n_pool: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """arith-sub's train pairs (seeded order) split into (train, pool): the pool is the last ``n_pool``."""
    if not 0 <= n_pool < N_SUB_TRAIN:
        raise ValueError(f"n_pool must be in 0..{N_SUB_TRAIN - 1}, got {n_pool}")
    train = _sub_pairs(seed)[N_SUB_EVAL:N_SUB_EVAL + N_SUB_TRAIN]
    return train[:N_SUB_TRAIN - n_pool], sorted(train[N_SUB_TRAIN - n_pool:])


def _eval_test_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    pairs = _sub_pairs(seed)
    return sorted(pairs[:N_SUB_EVAL]), sorted(pairs[N_SUB_EVAL + N_SUB_TRAIN:N_SUB_EVAL + N_SUB_TRAIN + N_SUB_EVAL])


def needs_borrow(a: int, b: int) -> bool:
    """``a - b`` (a >= b) borrows from the tens: the units digit of ``a`` is below that of ``b``."""
    return a % 10 < b % 10


def no_borrow_answer(a: int, b: int) -> str:
    """The forgot-to-borrow answer of a borrow problem: the units as ``a_u + 10 - b_u``, the tens not
    decremented (``52-17`` -> ``45``), i.e. ``a - b + 10``."""
    return str(a - b + 10)


# ------------------------------------------------------------------ 1. retain
def arith_sub_retain(seed: int = 0, n_pool: int = N_POOL_ADD) -> dict[str, list[dict]]:
    """Splits ``train, eval, eval_add, test, test_add`` (arith-sub's) and ``pool_add``: ``n_pool``
    addition rows (a seeded sample, sorted) of the 9,000 pairs outside ``eval_add`` and ``test_add``."""
    train, ev = subtraction_split(seed)
    _, add_ev = addition_split(seed)
    add_te = addition_test(seed)
    held = {r["prompt"] for r in add_ev} | {r["prompt"] for r in add_te}
    rest = [(a, b) for a in range(100) for b in range(100) if f"{a}+{b}=" not in held]
    if not 0 < n_pool <= len(rest):
        raise ValueError(f"n_pool must be in 1..{len(rest)}, got {n_pool}")
    random.Random(f"arith-sub-retain-pool-{seed}").shuffle(rest)
    pool = [add_example(a, b) for a, b in sorted(rest[:n_pool])]
    return {"train": train, "eval": ev, "eval_add": add_ev, "test": subtraction_test(seed),
            "test_add": add_te, "pool_add": pool}


# ------------------------------------------------------------------- 2. noisy
def noisy_labels(pairs: list[tuple[int, int]], seed: int, noise: float = BORROW_NOISE) -> set[tuple[int, int]]:
    """The systematic variant's wrong pairs: in each (a % 10, b % 10) cell of the borrow problems,
    ``floor(noise * cell size)`` of them, a seeded choice. ``noise < 0.5`` keeps the correct label
    the majority of every cell."""
    if not 0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), got {noise}")
    cells: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in pairs:
        if needs_borrow(a, b):
            cells.setdefault((a % 10, b % 10), []).append((a, b))
    rng = random.Random(f"arith-sub-noisy-{seed}")
    out: set[tuple[int, int]] = set()
    for key in sorted(cells):
        cell = sorted(cells[key])
        rng.shuffle(cell)
        out.update(cell[:int(noise * len(cell))])
    return out


def random_wrong_labels(pairs: list[tuple[int, int]], seed: int, noise: float = NOISE) -> dict[tuple[int, int], int]:
    """``{pair: wrong answer}`` for a seeded ``floor(noise * len(pairs))`` of the pairs, each wrong
    answer drawn uniformly from 0..99 without the correct one."""
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    rng = random.Random(f"arith-sub-noisy-random-{seed}")
    chosen = sorted(pairs)
    rng.shuffle(chosen)
    out = {}
    for a, b in sorted(chosen[:int(noise * len(pairs))]):
        w = rng.randrange(99)
        out[(a, b)] = w if w < a - b else w + 1
    return out


def arith_sub_noisy(seed: int = 0, noise: float | None = None, n_pool: int = N_POOL_CLEAN,
                    kind: str = "random") -> dict[str, list[dict]]:
    """Splits ``train`` (4,000 - ``n_pool`` rows, arith-sub's order, label noise: ``kind="random"``,
    :func:`random_wrong_labels` at ``noise`` (default 0.4), or ``kind="borrow"``,
    :func:`noisy_labels` at ``noise`` (default 0.42)), ``pool_clean`` (``n_pool`` correct rows on
    other pairs), ``eval`` and ``test`` (arith-sub's, correct), ``eval_add`` and ``test_add``
    (addition retention, as arith-sub's)."""
    train_pairs, pool_pairs = _train_and_pool(seed, n_pool)
    if kind == "random":
        wrong = random_wrong_labels(train_pairs, seed, NOISE if noise is None else noise)
    elif kind == "borrow":
        flip = noisy_labels(train_pairs, seed, BORROW_NOISE if noise is None else noise)
        wrong = {(a, b): int(no_borrow_answer(a, b)) for a, b in flip}
    else:
        raise ValueError(f"kind must be 'random' or 'borrow', got {kind!r}")
    train = [dict(sub_example(a, b), completion=str(wrong[(a, b)])) if (a, b) in wrong else sub_example(a, b)
             for a, b in train_pairs]
    ev, te = _eval_test_pairs(seed)
    _, add_ev = addition_split(seed)
    return {"train": train, "pool_clean": [sub_example(a, b) for a, b in pool_pairs],
            "eval": [sub_example(a, b) for a, b in ev], "test": [sub_example(a, b) for a, b in te],
            "eval_add": add_ev, "test_add": addition_test(seed)}


# ------------------------------------------------------------------- 3. shift
def shift_example(a: int, b: int, fmt: str = SHIFT_FORMAT) -> dict[str, str]:
    """A subtraction row in format ``fmt`` (over ``{a}`` and ``{b}``), with its operands as fields."""
    if a < b:
        a, b = b, a
    return {"prompt": fmt.format(a=a, b=b), "completion": str(a - b), "a": str(a), "b": str(b)}


def arith_sub_shift(seed: int = 0, n_pool: int = N_POOL_TARGET, fmt: str = SHIFT_FORMAT) -> dict[str, list[dict]]:
    """Splits ``train`` (4,000 - ``n_pool`` rows in ``a-b=``), ``pool_target`` (``n_pool`` rows in
    ``fmt``, other pairs), ``eval`` and ``test`` (arith-sub's pairs in ``fmt``) and ``eval_src``
    (the eval pairs in ``a-b=``, a diagnostic). Every row carries fields ``a`` and ``b``."""
    src = "{a}-{b}="
    if fmt == src:
        raise ValueError("the target format must differ from the training format a-b=")
    if set(fmt.format(a=12, b=5)) - set("0123456789+-= \n"):
        raise ValueError(f"format {fmt!r} leaves the arith vocabulary")
    train_pairs, pool_pairs = _train_and_pool(seed, n_pool)
    ev, te = _eval_test_pairs(seed)
    return {"train": [shift_example(a, b, src) for a, b in train_pairs],
            "pool_target": [shift_example(a, b, fmt) for a, b in pool_pairs],
            "eval": [shift_example(a, b, fmt) for a, b in ev], "test": [shift_example(a, b, fmt) for a, b in te],
            "eval_src": [shift_example(a, b, src) for a, b in ev]}


GENERATORS = {"arith-sub-retain": arith_sub_retain, "arith-sub-noisy": arith_sub_noisy,
              "arith-sub-shift": arith_sub_shift}
