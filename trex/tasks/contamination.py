"""The contamination guard: are training rows copies of held-out rows?

    report = check_overlap(train_rows, {"eval": eval_rows, "test": test_rows}, cache_dir=home / "cache" / "overlap")
    if report.refused: print(report.reason)

Rows are ``{"prompt", "completion"}`` dicts (a prepared split's or a recipe's rows). Three kinds of
evidence, each counted per held-out split:

* **exact pairs** — the normalised (prompt, completion) of a training row is a held-out row's;
* **exact prompts** — its normalised prompt is a held-out row's (normalised: casefolded,
  whitespace collapsed, stripped);
* **long n-gram overlap** over the raw prompt field: of a training row's word n-grams (``n``
  words, casefolded), the fraction also found in the held-out split. N-grams present in many
  training rows (an instruction, a template, a cue vocabulary: more than ``frequent_fraction``
  of the rows and at least ``frequent_min_rows`` of them) are dropped on both sides: they are
  what every row shares, not evidence of a leak. A prompt of fewer than ``n`` words (arith's
  ``"12-7="``) is checked by exact match only.

**Calibration.** The n-gram threshold is calibrated against the task's own clean train-vs-held-out
baseline: the ``baseline_quantile`` of the per-row fractions of the *reference* rows (the task's
own train split; by default the training rows themselves), leaving out rows that match exactly.
The threshold used is ``max(row_threshold, baseline + margin)``; where that passes 1 the n-gram
check cannot tell a leak from this task's normal text and is off (recorded as ``threshold_used
= None``); the exact checks still run. Both numbers are in the report.

**Refusal.** A training set is refused when the rows flagged (exact prompt or n-gram) exceed
``max_train_fraction`` of the training rows, or the held-out rows whose prompt a training row
holds exceed ``max_heldout_fraction`` of a held-out split (so a large pool source that hides 5%
of the test prompts is refused however many rows it has). N-gram matches count on the training
side only: a task's clean rows can share most of their n-grams with some held-out row by chance
(orders: up to 78% at n=8), so a held-out row "covered" by n-grams is no proof.

N-grams are hashed (Python's ``hash`` of the word tuple, 64 bits, in one process) into sorted
numpy arrays: the containment fraction is exact up to hash collisions (about 1e-7 for millions of
n-grams), which MinHash/LSH (datasketch) would only estimate, at no gain at this scale (see
docs/data.md for the measured cost).

Reports are cached by (training rows' content hash, each held-out split's content hash, the
reference's hash, the settings) under a folder the caller names: a file named by the sha256 of
those hashes only, written under a temp name opened with ``O_NOFOLLOW`` and renamed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

GUARD_VERSION = 1  # part of the cache key: a change of method invalidates cached reports
MAX_EXAMPLES = 5


class OverlapSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = Field(default=8, ge=2, le=64)  # words per n-gram
    row_threshold: float = Field(default=0.5, gt=0, le=1)  # a row's n-gram fraction that counts as overlap
    frequent_fraction: float = Field(default=0.05, gt=0, le=1)  # n-grams in more training rows are template
    frequent_min_rows: int = Field(default=3, ge=2)  # ... and in at least this many rows
    baseline_quantile: float = Field(default=0.99, gt=0, le=1)
    margin: float = Field(default=0.1, ge=0, le=1)  # the threshold sits at least this far above the baseline
    max_train_fraction: float = Field(default=0.01, ge=0, le=1)  # refuse above this share of training rows
    max_heldout_fraction: float = Field(default=0.01, ge=0, le=1)  # ... or of a held-out split's rows


class SplitOverlap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    split: str
    rows: int
    exact_pairs: int  # training rows whose normalised (prompt, completion) is one of this split's
    exact_prompts: int  # training rows whose normalised prompt is one of this split's
    ngram_rows: int  # further training rows (no exact prompt match) over the n-gram threshold
    covered: int  # this split's rows whose normalised prompt a training row holds


class OverlapReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str  # the cache key (sha256 of the content hashes and the settings)
    train_hash: str
    train_rows: int
    short_rows: int  # training prompts of fewer than n words: exact match only
    splits: tuple[SplitOverlap, ...]
    exact_pairs: int  # over all held-out splits (distinct training rows)
    exact_prompts: int
    ngram_rows: int
    flagged_rows: int  # exact prompt or n-gram, any split
    fraction: float  # flagged_rows / train_rows
    example_rows: tuple[int, ...]  # a few flagged training row indices (never their text)
    settings: OverlapSettings
    baseline: float  # the clean reference's per-row n-gram fraction at baseline_quantile
    threshold_used: float | None  # the calibrated n-gram threshold; None: the n-gram check is off
    refused: bool
    reason: str  # one line naming the overlap

    def event_fields(self) -> dict:
        """The fields of a :class:`trex.events.data.DataOverlapChecked` (counts and row ids only)."""
        return {"key": self.key, "train_hash": self.train_hash, "train_rows": self.train_rows,
                "heldout_rows": tuple((s.split, s.rows) for s in self.splits),
                "exact_pairs": self.exact_pairs, "exact_prompts": self.exact_prompts, "ngram_rows": self.ngram_rows,
                "flagged_rows": self.flagged_rows, "fraction": self.fraction,
                "heldout_covered": tuple((s.split, s.covered) for s in self.splits),
                "example_rows": self.example_rows, "n": self.settings.n, "row_threshold": self.settings.row_threshold,
                "threshold_used": self.threshold_used, "baseline": self.baseline, "refused": self.refused,
                "reason": self.reason}

    def event(self, *, node_id: str = "", scope: str = "recipe"):
        from trex.events.data import DataOverlapChecked

        return DataOverlapChecked(node_id=node_id, scope=scope, **self.event_fields())


# ------------------------------------------------------------------------------------------ hashing
def normalise(text: str) -> str:
    return " ".join(str(text).casefold().split())


def rows_hash(rows: Iterable[Mapping]) -> str:
    """sha256 over the rows' prompt and completion fields, in order (what the guard reads)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(str(r.get("prompt", "")).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        h.update(str(r.get("completion", "")).encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()


def cache_key(train_hash: str, heldout_hashes: Mapping[str, str], reference_hash: str | None,
              settings: OverlapSettings) -> str:
    blob = json.dumps({"v": GUARD_VERSION, "train": train_hash, "heldout": dict(sorted(heldout_hashes.items())),
                       "reference": reference_hash, "settings": settings.model_dump()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------------ the check
def check_overlap(train: Sequence[Mapping], heldout: Mapping[str, Sequence[Mapping]], *,
                  reference: Sequence[Mapping] | None = None, settings: OverlapSettings | None = None,
                  cache_dir: str | os.PathLike | None = None, train_hash: str | None = None) -> OverlapReport:
    """Check ``train`` rows against each held-out split (``{split: rows}``, every non-train split).

    ``reference``: the task's own clean training rows, for the calibration baseline (default:
    ``train`` itself). ``train_hash``: the rows' content hash where the caller has it (a recipe
    output's), else computed. With ``cache_dir`` a report seen before is read back, not recomputed."""
    s = settings or OverlapSettings()
    th = train_hash or rows_hash(train)
    hh = {k: rows_hash(v) for k, v in heldout.items()}
    rh = None if reference is None else rows_hash(reference)
    key = cache_key(th, hh, rh, s)
    if cache_dir is not None:
        hit = _read_cached(Path(cache_dir), key)
        if hit is not None:
            return hit
    report = _compute(train, heldout, reference, s, key, th)
    if cache_dir is not None:
        _write_cached(Path(cache_dir), key, report)
    return report


def _grams(prompts: Sequence[str], n: int):
    """(hashes, row ids, long-row mask): each long prompt's distinct hashed word n-grams."""
    import numpy as np

    hs: list[int] = []
    ids: list[int] = []
    long = np.zeros(len(prompts), dtype=bool)
    for i, p in enumerate(prompts):
        w = p.casefold().split()
        if len(w) < n:
            continue
        long[i] = True
        g = {hash(t) for t in zip(*(w[k:] for k in range(n)))}
        hs.extend(g)
        ids.extend([i] * len(g))
    return np.array(hs, dtype=np.int64), np.array(ids, dtype=np.int64), long


def _member(values, sorted_set):
    import numpy as np

    if len(sorted_set) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    idx = np.searchsorted(sorted_set, values)
    idx[idx == len(sorted_set)] = 0
    return sorted_set[idx] == values


def _fractions(hashes, ids, keep, other_sorted, n_rows: int):
    """Per row: the share of its kept n-grams found in ``other_sorted`` (0 where it keeps none)."""
    import numpy as np

    hit = _member(hashes, other_sorted) & keep
    den = np.bincount(ids, weights=keep, minlength=n_rows)
    num = np.bincount(ids, weights=hit, minlength=n_rows)
    return np.divide(num, den, out=np.zeros(n_rows), where=den > 0)


def _frequent(hashes, n_rows: int, s: OverlapSettings):
    """Sorted hashes present in more than ``frequent_fraction`` of the rows (and ``frequent_min_rows``)."""
    import numpy as np

    if len(hashes) == 0:
        return hashes
    uniq, counts = np.unique(hashes, return_counts=True)  # a row's n-grams are distinct: counts are rows
    return uniq[(counts > s.frequent_fraction * n_rows) & (counts >= s.frequent_min_rows)]


def _compute(train, heldout, reference, s: OverlapSettings, key: str, train_hash: str) -> OverlapReport:
    import numpy as np

    n_train = len(train)
    t_prompts = [str(r.get("prompt", "")) for r in train]
    t_norm = [normalise(p) for p in t_prompts]
    t_pairs = [(p, normalise(r.get("completion", ""))) for p, r in zip(t_norm, train)]
    th, tid, tlong = _grams(t_prompts, s.n)
    tfreq = _frequent(th, n_train, s)
    tkeep = ~_member(th, tfreq)

    split_data = {}
    for split, rows in sorted(heldout.items()):
        prompts = [str(r.get("prompt", "")) for r in rows]
        norm = [normalise(p) for p in prompts]
        pairs = {(p, normalise(r.get("completion", ""))) for p, r in zip(norm, rows)}
        hh, hid, _ = _grams(prompts, s.n)
        split_data[split] = (rows, norm, pairs, hh, hid, np.unique(hh))

    # exact matches, per split
    exact_prompt_rows = np.zeros(n_train, dtype=bool)
    exact_pair_rows = np.zeros(n_train, dtype=bool)
    per_split_exact = {}
    for split, (rows, norm, pairs, *_rest) in split_data.items():
        pset = set(norm)
        ep = np.fromiter((p in pset for p in t_norm), dtype=bool, count=n_train)
        epair = np.fromiter((x in pairs for x in t_pairs), dtype=bool, count=n_train)
        per_split_exact[split] = (ep, epair, {p for p, m in zip(t_norm, ep) if m})
        exact_prompt_rows |= ep
        exact_pair_rows |= epair

    # the n-gram fractions of the training rows, per split
    fr = {split: _fractions(th, tid, tkeep, d[5], n_train) for split, d in split_data.items()}

    # calibration: the reference's clean per-row fractions (exact matches left out)
    if reference is None:
        ref_fracs = [f[tlong & ~exact_prompt_rows] for f in fr.values()]
    else:
        ref_fracs = _reference_fractions(reference, split_data, s)
    baseline = max((float(np.quantile(f, s.baseline_quantile)) for f in ref_fracs if len(f)), default=0.0)
    thr = max(s.row_threshold, baseline + s.margin)
    threshold_used = None if thr > 1.0 + 1e-12 else min(thr, 1.0)

    ngram_any = np.zeros(n_train, dtype=bool)
    per_split_ngram = {}
    for split, f in fr.items():
        m = (f >= threshold_used - 1e-12) & tlong & ~exact_prompt_rows if threshold_used is not None else \
            np.zeros(n_train, dtype=bool)
        per_split_ngram[split] = m
        ngram_any |= m
    flagged = exact_prompt_rows | ngram_any

    # held-out rows whose prompt a training row holds (n-gram matches count on the training side only:
    # a task's clean rows can share most of their n-grams with some held-out row by chance)
    splits = []
    for split, (rows, norm, pairs, hh, hid, _u) in split_data.items():
        ep, epair, matched = per_split_exact[split]
        covered = np.fromiter((p in matched for p in norm), dtype=bool, count=len(rows))
        splits.append(SplitOverlap(split=split, rows=len(rows), exact_pairs=int(epair.sum()),
                                   exact_prompts=int(ep.sum()), ngram_rows=int(per_split_ngram[split].sum()),
                                   covered=int(covered.sum())))

    n_flag = int(flagged.sum())
    fraction = n_flag / n_train if n_train else 0.0
    over_train = fraction > s.max_train_fraction
    over_held = [x for x in splits if x.rows and x.covered / x.rows > s.max_heldout_fraction]
    refused = bool(n_flag) and (over_train or bool(over_held))
    report = dict(
        key=key, train_hash=train_hash, train_rows=n_train, short_rows=int((~tlong).sum()), splits=tuple(splits),
        exact_pairs=int(exact_pair_rows.sum()), exact_prompts=int(exact_prompt_rows.sum()),
        ngram_rows=int(ngram_any.sum()), flagged_rows=n_flag, fraction=fraction,
        example_rows=tuple(int(i) for i in np.flatnonzero(flagged)[:MAX_EXAMPLES]), settings=s,
        baseline=round(baseline, 6), threshold_used=None if threshold_used is None else round(threshold_used, 6),
        refused=refused)
    return OverlapReport(**report, reason=_reason(report, over_train, over_held))


def _reference_fractions(reference, split_data, s: OverlapSettings):
    """The reference rows' per-row fractions against each split (its own template dropped)."""
    import numpy as np

    prompts = [str(r.get("prompt", "")) for r in reference]
    norm = [normalise(p) for p in prompts]
    rh, rid, rlong = _grams(prompts, s.n)
    rkeep = ~_member(rh, _frequent(rh, len(reference), s))
    out = []
    for _split, (_rows, hnorm, _pairs, _hh, _hid, hu) in split_data.items():
        hset = set(hnorm)
        clean = rlong & ~np.fromiter((p in hset for p in norm), dtype=bool, count=len(reference))
        out.append(_fractions(rh, rid, rkeep, hu, len(reference))[clean])
    return out


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "0%"


def _reason(r: dict, over_train: bool, over_held: list[SplitOverlap]) -> str:
    s: OverlapSettings = r["settings"]
    n = r["train_rows"]
    calib = (f"{s.n}-gram threshold {r['threshold_used']:.2f}" if r["threshold_used"] is not None
             else f"{s.n}-gram check off") + f", clean baseline {r['baseline']:.2f}"
    if not r["flagged_rows"]:
        names = "/".join(x.split for x in r["splits"]) or "no held-out split"
        return f"no overlap: 0 of {n} training rows match {names} ({calib})"
    parts = []
    for x in r["splits"]:
        if x.exact_prompts:
            both = f" ({x.exact_pairs} their completion too)" if x.exact_pairs else ""
            parts.append(f"{x.exact_prompts} share their prompt with {x.split}{both}")
        if x.ngram_rows:
            parts.append(f"{x.ngram_rows} share at least {r['threshold_used']:.0%} of their {s.n}-grams with {x.split}")
    head = (f"{r['flagged_rows']} of {n} training rows ({_pct(r['flagged_rows'], n)}) overlap held-out data: "
            + "; ".join(parts))
    cov = ", ".join(f"{x.covered} of {x.rows} {x.split} rows ({_pct(x.covered, x.rows)})" for x in r["splits"]
                    if x.covered)
    limits = f"limits {s.max_train_fraction:.1%} of training rows, {s.max_heldout_fraction:.1%} of a held-out split"
    verdict = "refused" if r["refused"] else "below the limits"
    why = " and ".join(w for w, on in (("training share", over_train),
                                        (", ".join(x.split for x in over_held) + " share", bool(over_held))) if on)
    return (f"{head}; covering {cov or 'no held-out rows'} — {verdict}"
            f"{' (' + why + ' over the ' + limits + ')' if r['refused'] else ' (' + limits + ')'}; {calib}")


# ------------------------------------------------------------------------------------------ the cache
def _read_cached(folder: Path, key: str) -> OverlapReport | None:
    try:
        fd = os.open(folder / f"{key}.json", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(1 << 20))
        report = OverlapReport.model_validate(data)
    except (OSError, ValueError, ValidationError):
        return None  # a damaged entry is recomputed (and rewritten)
    return report if report.key == key else None


def _write_cached(folder: Path, key: str, report: OverlapReport) -> None:
    from trex.events.fsio import LinkRefused, ensure_dir

    try:  # the cache folder and every folder on the way (from the last that exists) made without a link
        parts: list[str] = []
        base = Path(folder)
        while not base.exists() and not base.is_symlink() and base.parent != base:
            parts.insert(0, base.name)
            base = base.parent
        ensure_dir(base, *parts)
    except (LinkRefused, OSError):
        return  # no write follows a link: the report is recomputed next time
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(report.model_dump_json().encode())
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def heldout_splits(task, home=None) -> dict[str, list[dict]]:
    """Every split of ``task`` a metric may score (all but train and the pools, which are training
    sources) → its rows."""
    from trex.tasks.prepare import load_split

    pools = {p.split for p in getattr(task, "pools", ())}
    return {s: load_split(task, s, home) for s in task.splits if s != "train" and s not in pools}


def check_task_data(task, home=None, settings: OverlapSettings | None = None) -> OverlapReport:
    """The task's own train split against every other split of it, cached under HOME/cache/overlap."""
    from trex.tasks.installed import trex_home
    from trex.tasks.prepare import load_split

    h = trex_home(home)
    return check_overlap(load_split(task, "train", h), heldout_splits(task, h), settings=settings,
                         cache_dir=h / "cache" / "overlap")


__all__ = ["OverlapReport", "OverlapSettings", "SplitOverlap", "check_overlap", "check_task_data", "heldout_splits",
           "normalise", "rows_hash"]
