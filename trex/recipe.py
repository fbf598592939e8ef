"""Data recipes: where training rows come from and the deterministic ops applied to them.

A :class:`Recipe` is plain, flat data (it sits inside a :class:`trex.plan.Plan` and an
LLM fills it through a JSON schema). :func:`materialize` runs it with ``datasets`` in
a fixed order::

    load each source -> filter (length, regex) -> dedup -> sample/mix by ratio -> balance labels
    -> apply the prompt template -> clean by loss -> shuffle(seed) -> cap at max_rows

and returns the rows' content hash; the rows are cached under
``HOME/datasets/<hh>/<hash>.jsonl``. Rows are ``{"prompt": str, "completion": str}``.

Mixing (``mix``): ``"min"`` takes the largest total the weights allow without repeating a row;
``"first"`` keeps every row of the first source and samples each other source to its share of
the total, repeating rows when it has too few (replay: "mix 10% addition into the train split").
Label balancing keeps as many rows of each completion as the rarest one has (classification).
Cleaning by loss (``clean``) drops the ``fraction`` of rows a named node's adapter finds hardest
(highest mean completion loss), a standard fix for label noise: the losses come from the caller
(the Executor computes them and caches them by adapter and rows).

Sources:

* ``task:<task>/<split>``: a registered task's split (its data folder);
* ``pool:<task>/<pool>``: one of the task's declared pools (candidate training sources);
* a path to a ``.jsonl``/``.json``/``.parquet``/``.csv`` file, relative to the trex home
  or absolute inside the trex home or a task data folder. ``..``, absolute paths
  elsewhere, symlinks leading out, ``file://`` and other URLs, and NUL bytes are refused;
* ``hf:<org>/<name>[:split]``: a Hugging Face hub dataset; loaded only when
  ``TREX_ALLOW_HUB=1`` (no hub is reachable here), else a clear error.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import string
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

MAX_ROWS = 1_000_000
ALLOWED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
_TASK_RE = re.compile(r"^task:([a-z0-9][a-z0-9._-]{0,63})/([a-z0-9_]{1,32})$")
_POOL_RE = re.compile(r"^pool:([a-z0-9][a-z0-9._-]{0,63})/([a-z0-9][a-z0-9_-]{0,31})$")
_SHA256_RE = r"^[0-9a-f]{64}$"
_HF_RE = re.compile(r"^hf:([A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9._-]{1,96})?)(?::([A-Za-z0-9_.-]{1,32}))?$")


def linear_regex(pattern: str):
    """A compiled RE2 pattern: matching takes time linear in the text, so a recipe's filter cannot
    backtrack for hours outside the trial's time limit (Python's ``re`` can: ``(a+)+$``). Raises
    ``ValueError`` for a pattern RE2 does not accept."""
    import re2

    opts = re2.Options()
    opts.log_errors = False  # the error is ours to report, in one line
    try:
        return re2.compile(pattern, opts)
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(msg) from None


class RecipeError(ValueError):
    """A recipe that cannot be run: bad path, missing file, hub unreachable, bad template."""


class UnsafePath(RecipeError):
    pass


class Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    uri: str = Field(min_length=1, max_length=512, description=(
        "task:<task>/<split>, a data file path inside the trex home (.jsonl/.json/.parquet/.csv), "
        "or hf:<org>/<dataset>[:split]"))
    weight: float = Field(default=1.0, gt=0, le=1000, description="mixing ratio relative to the other sources")
    prompt_field: str = Field(default="prompt", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    completion_field: str = Field(default="completion", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

    @field_validator("uri")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("source uri contains a NUL byte")
        return v


_LATER_DEFAULTS = {"mix": "min", "balance_labels": False, "clean": None}


class CleanStep(BaseModel):
    """Drop the hardest rows under a node's adapter (its content hash, so the recipe stays content-addressed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    node: str = Field(min_length=1, max_length=64, description="the node whose adapter scores the rows")
    adapter: str = Field(min_length=64, max_length=64, description="that node's adapter (artifact hash)")
    fraction: float = Field(gt=0, le=0.9, description="share of the rows to drop, hardest first")

    @field_validator("adapter")
    @classmethod
    def _sha256(cls, v: str) -> str:  # checked here, not as schema patterns (vLLM's xgrammar refused them)
        if not re.fullmatch(_SHA256_RE, v):
            raise ValueError("adapter must be a sha256 hex digest")
        return v

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", v):
            raise ValueError("node must be a node id (letters, digits, '_', '.', ':', '-')")
        return v


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sources: tuple[Source, ...] = Field(min_length=1, max_length=8)
    mix: Literal["min", "first"] = Field(default="min", description=(
        "min: the largest total the weights allow without repeating rows; first: every row of the first "
        "source, the others sampled (repeated if needed) to their share"))
    balance_labels: bool = Field(default=False, description="keep as many rows per completion as the rarest has")
    clean: CleanStep | None = Field(default=None, description="drop the rows a node's adapter finds hardest")
    min_chars: int = Field(default=0, ge=0, le=1_000_000, description="drop rows whose prompt+completion is shorter")
    max_chars: int | None = Field(default=None, ge=1, le=1_000_000, description="drop rows longer than this")
    include_regex: str | None = Field(default=None, max_length=200, description="keep rows whose prompt matches")
    exclude_regex: str | None = Field(default=None, max_length=200, description="drop rows whose prompt matches")
    dedup: bool = Field(default=True, description="drop exact duplicate (prompt, completion) pairs")
    max_rows: int | None = Field(default=None, ge=1, le=MAX_ROWS, description="total rows after mixing")
    prompt_template: str = Field(default="{prompt}", max_length=2000,
                                 description="python format string over the row's fields; must use {prompt}")
    shuffle_seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        """Fields added after plans were first hashed are left out at their defaults: a recipe that does not
        use them dumps (and so hashes, inside its plan) exactly as it always did."""
        out = handler(self)
        for k, default in _LATER_DEFAULTS.items():
            if k in out and out[k] == default:
                del out[k]
        return out

    @field_validator("include_regex", "exclude_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            linear_regex(v)
        except ValueError as e:
            raise ValueError(f"invalid regex {v!r}: {e} (RE2 syntax: no backreferences or lookaround)") from None
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        fields = template_fields(v)
        if "prompt" not in fields:
            raise ValueError("prompt_template must contain {prompt}")
        return v

    @model_validator(mode="after")
    def _lengths(self) -> "Recipe":
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError("max_chars must be >= min_chars")
        return self


def template_fields(template: str) -> list[str]:
    """Field names of a format string; only plain names (no attribute/index access, no conversions)."""
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"invalid prompt_template: {e}") from None
    for _lit, name, spec, conv in parsed:
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) or spec or conv:
            raise ValueError(f"prompt_template field {{{name}}} must be a plain field name")
        out.append(name)
    return out


def recipe_for_task(task: str, split: str = "train", **kw) -> Recipe:
    return Recipe(sources=(Source(uri=f"task:{task}/{split}"),), **kw)


# ------------------------------------------------------------------ paths
def resolve_local(uri: str, home: Path, allowed_roots: Sequence[Path] = ()) -> Path:
    """Resolve a local data path, confined to the trex home and the allowed roots.

    Raises :class:`UnsafePath` for ``..`` components, URLs (``file://`` included), NUL
    bytes, absolute paths outside the roots and symlinks that lead out of them.
    """
    if "\x00" in uri:
        raise UnsafePath("data path contains a NUL byte")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri) or uri.lower().startswith("file:"):
        raise UnsafePath(f"data path {uri!r} is a URL; only plain paths inside the trex home are allowed")
    parts = re.split(r"[\\/]+", uri)
    if ".." in parts:
        raise UnsafePath(f"data path {uri!r} contains '..'")
    if uri.startswith("~"):
        raise UnsafePath(f"data path {uri!r} starts with '~'")
    roots = [Path(home).resolve()] + [Path(r).resolve() for r in allowed_roots]
    p = Path(uri)
    if not p.is_absolute():
        p = Path(home) / p
    real = p.resolve()  # follows every symlink
    if not any(real == r or r in real.parents for r in roots):
        raise UnsafePath(f"data path {uri!r} resolves to {real}, outside the trex home and task data folders")
    if real.suffix.lower() not in ALLOWED_SUFFIXES:
        raise RecipeError(f"data file {uri!r}: unsupported type (use {', '.join(ALLOWED_SUFFIXES)})")
    if not real.is_file():
        raise RecipeError(f"data file {uri!r} not found")
    return real


def source_path(src: Source, home: Path, allowed_roots: Sequence[Path]) -> Path | None:
    """The local file a source reads (its task split or pool prepared first), or None for a hub dataset."""
    for pattern, kind in ((_TASK_RE, "split"), (_POOL_RE, "pool")):
        m = pattern.match(src.uri)
        if not m:
            continue
        from trex.tasks import get_task, prepare_data

        try:
            t = get_task(m.group(1), home)
        except KeyError as e:
            raise RecipeError(str(e.args[0])) from None
        if kind == "split":
            if m.group(2) not in t.splits:
                raise RecipeError(f"task {t.name!r} has no split {m.group(2)!r}")
            if m.group(2) != "train" and not m.group(2).startswith("train"):
                raise RecipeError(f"task {t.name!r}: only training splits may be used in a recipe, not {m.group(2)!r}")
            return prepare_data(t, home) / f"{m.group(2)}.jsonl"
        pool = t.pool(m.group(2))
        if pool is None:
            names = ", ".join(p.name for p in t.pools) or "none"
            raise RecipeError(f"task {t.name!r} has no pool {m.group(2)!r} (pools: {names})")
        return prepare_data(t, home) / f"{pool.split}.jsonl"
    if src.uri.startswith("hf:"):
        if not _HF_RE.match(src.uri):
            raise RecipeError(f"bad hub dataset id {src.uri!r} (hf:<org>/<name>[:split])")
        return None
    return resolve_local(src.uri, home, allowed_roots)


def _load_source(src: Source, home: Path, allowed_roots: Sequence[Path]):
    from datasets import Dataset, load_dataset

    from trex.events.fsio import ensure_dir

    cache = str(ensure_dir(home, "cache", "hf-datasets"))  # datasets' arrow copies inside the home, never via a link
    path = source_path(src, home, allowed_roots)
    if path is None:
        hm = _HF_RE.match(src.uri)
        if os.environ.get("TREX_ALLOW_HUB") != "1":
            raise RecipeError(
                f"{src.uri}: Hugging Face hub datasets need a reachable hub; this machine has none "
                "(set TREX_ALLOW_HUB=1 where the hub is reachable, or download the data into the trex home)")
        return load_dataset(hm.group(1), split=hm.group(2) or "train", cache_dir=cache)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(str(path), cache_dir=cache)
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path), cache_dir=cache)
    return Dataset.from_csv(str(path), cache_dir=cache)


# --------------------------------------------------------------- materialize
def rows_hash(rows: Iterable[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_path(home: Path, digest: str) -> Path:
    return Path(home) / "datasets" / digest[:2] / f"{digest}.jsonl"


def apply_recipe(recipe: Recipe, home: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] = (),
                 row_losses: "RowLosses | None" = None) -> list[dict]:
    """The recipe's output rows (deterministic for the same recipe, inputs and row losses)."""
    import datasets

    datasets.disable_progress_bars()
    home = Path(home)
    roots = [Path(r) for r in allowed_roots]
    # task data folders are always allowed
    roots.append(home / "tasks")
    inc = linear_regex(recipe.include_regex) if recipe.include_regex else None
    exc = linear_regex(recipe.exclude_regex) if recipe.exclude_regex else None
    fields = template_fields(recipe.prompt_template)
    parts = []
    for i, src in enumerate(recipe.sources):
        ds = _load_source(src, home, roots)
        for f in (src.prompt_field, src.completion_field):
            if f not in ds.column_names:
                raise RecipeError(f"source {src.uri!r} has no column {f!r} (columns: {', '.join(ds.column_names)})")
        missing = [f for f in fields if f != "prompt" and f not in ds.column_names]
        if missing:
            raise RecipeError(f"prompt_template uses {missing} which source {src.uri!r} lacks")

        def norm(row, src=src):
            out = {k: ("" if row[k] is None else str(row[k])) for k in fields if k != "prompt"}
            out["prompt"] = "" if row[src.prompt_field] is None else str(row[src.prompt_field])
            out["completion"] = "" if row[src.completion_field] is None else str(row[src.completion_field])
            return out

        ds = ds.map(norm, remove_columns=ds.column_names, load_from_cache_file=False)

        def keep(row):
            n = len(row["prompt"]) + len(row["completion"])
            if n < recipe.min_chars or (recipe.max_chars is not None and n > recipe.max_chars):
                return False
            if inc is not None and not inc.search(row["prompt"]):
                return False
            if exc is not None and exc.search(row["prompt"]):
                return False
            return True

        ds = ds.filter(keep, load_from_cache_file=False)
        parts.append(ds.to_list())
    if recipe.dedup:
        parts = dedup_parts(parts)
    import random

    mixed = _mix(recipe, parts)
    if recipe.balance_labels:
        mixed = balance_labels(mixed, recipe.shuffle_seed)
    out = [{"prompt": recipe.prompt_template.format(**r), "completion": r["completion"]} for r in mixed]
    if recipe.clean is not None:
        if row_losses is None:
            raise RecipeError("cleaning by loss needs the rows scored by an adapter (run it through the Executor)")
        out = drop_hardest(out, row_losses(recipe.clean.adapter, out), recipe.clean.fraction)
    random.Random(f"{recipe.shuffle_seed}-shuffle").shuffle(out)
    if recipe.max_rows is not None and recipe.mix == "first":
        out = out[:recipe.max_rows]  # "first" mixes every row first; the cap keeps the shares (shuffled)
    if not out:
        raise RecipeError("the recipe produced no rows")
    return out


def _mix(recipe: Recipe, parts: list[list[dict]]) -> list[dict]:
    """The sources' rows mixed by their weights (see the module docstring for ``mix``)."""
    import random

    total_w = sum(s.weight for s in recipe.sources)
    if recipe.mix == "first":
        first = parts[0]
        if not first:
            raise RecipeError(f"the first source {recipe.sources[0].uri!r} has no rows (mix 'first' keeps them all)")
        total = len(first) * total_w / recipe.sources[0].weight
        if total > MAX_ROWS:  # a tiny first weight would ask for millions of repeated rows
            raise RecipeError(f"mix 'first' would make {total:.3g} rows (the first source's {len(first)} rows at "
                              f"weight {recipe.sources[0].weight:g} of {total_w:g}); at most {MAX_ROWS} are allowed")
        mixed = list(first)
        for i, (p, s) in enumerate(zip(parts[1:], recipe.sources[1:]), start=1):
            n = int(round(total * s.weight / total_w))
            if n and not p:
                raise RecipeError(f"source {s.uri!r} has no rows to mix in")
            rng = random.Random(f"{recipe.shuffle_seed}-sample-{i}")
            reps, rest = divmod(n, len(p)) if p else (0, 0)
            mixed.extend(p * reps)  # every row as often as it fits, then a seeded sample for the rest
            mixed.extend(p[j] for j in sorted(rng.sample(range(len(p)), rest)))
        return mixed
    return mix_by_weight(parts, [s.weight for s in recipe.sources], recipe.max_rows, recipe.shuffle_seed)


def dedup_parts(parts: list[list[dict]]) -> list[list[dict]]:
    """Each part without the (prompt, completion) pairs seen before, in this part or an earlier one."""
    seen: set[tuple[str, str]] = set()
    out = []
    for rows in parts:
        kept = []
        for r in rows:
            key = (r["prompt"], r["completion"])
            if key not in seen:
                seen.add(key)
                kept.append(r)
        out.append(kept)
    return out


def mix_by_weight(parts: list[list[dict]], weights: Sequence[float], max_rows: int | None = None,
                  seed: int = 0) -> list[dict]:
    """Mix ``min``: each part gets weight/sum(weights) of the total, capped by what it has — the largest
    total the ratios allow with the rows available (and ``max_rows``) — as a seeded sample, in order."""
    import random

    total_w = sum(weights)
    avail = sum(len(p) for p in parts)
    target = min(avail, max_rows) if max_rows is not None else avail
    if len(parts) == 1 and max_rows is None:
        return parts[0]
    feasible = min((len(p) * total_w / w for p, w in zip(parts, weights)), default=0)
    target = min(target, int(feasible)) if len(parts) > 1 else target
    mixed = []
    for i, (p, w) in enumerate(zip(parts, weights)):
        n = min(len(p), int(round(target * w / total_w)))
        idx = sorted(random.Random(f"{seed}-sample-{i}").sample(range(len(p)), n))
        mixed.extend(p[j] for j in idx)
    return mixed


def balance_labels(rows: list[dict], seed: int = 0) -> list[dict]:
    """As many rows of each completion as the rarest completion has (a seeded sample of each, in order)."""
    import random

    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["completion"].strip(), []).append(i)
    if not by:
        return rows
    n = min(len(v) for v in by.values())
    keep: list[int] = []
    for label in sorted(by):
        idx = by[label]
        keep.extend(random.Random(f"{seed}-balance-{label}").sample(idx, n))
    return [rows[i] for i in sorted(keep)]


def drop_hardest(rows: list[dict], losses: Sequence[float], fraction: float) -> list[dict]:
    """``rows`` without the ``fraction`` with the highest loss (ties: the later row goes first; a NaN
    loss counts as the hardest)."""
    import math

    if len(losses) != len(rows):
        raise RecipeError(f"cleaning by loss: {len(losses)} losses for {len(rows)} rows")
    k = int(len(rows) * fraction)
    key = [(math.inf if not math.isfinite(x) else float(x), i) for i, x in enumerate(losses)]
    drop = {i for _, i in sorted(key, reverse=True)[:k]}
    return [r for i, r in enumerate(rows) if i not in drop]


RowLosses = Callable[[str, list[dict]], Sequence[float]]
"""``(adapter hash, rows) -> one loss per row``: how a caller scores rows for cleaning by loss."""


def recipe_key(recipe: Recipe, home: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] = (),
               loss_key: str = "") -> str | None:
    """What the recipe's rows depend on: the recipe itself (a cleaning step's adapter hash included), the
    content of every file it reads and, for a recipe that cleans by loss, ``loss_key`` (what else the row
    losses depend on: the base model, the scoring length, the scoring code's version). None when a source
    is a hub dataset (no local content to hash)."""
    from trex.artifacts import file_hash

    home = Path(home)
    roots = [Path(r) for r in allowed_roots] + [home / "tasks"]
    files = []
    for src in recipe.sources:
        path = source_path(src, home, roots)
        if path is None:
            return None
        files.append(file_hash(path))
    body = {"v": 1, "recipe": recipe.model_dump(mode="json"), "files": files}
    if recipe.clean is not None:
        body["losses"] = loss_key
    body = json.dumps(body, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _index_hit(home: Path, index: Path) -> tuple[str, Path] | None:
    """The cached rows an index entry names, when they are there, unlinked and still what it says."""
    from trex.events.fsio import ensure_dir

    if not index.is_file():
        return None
    digest = index.read_text(errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    path = dataset_path(home, digest)
    ensure_dir(home, *path.parent.relative_to(home).parts)
    return (digest, path) if _holds_rows(path, digest) else None


def _holds_rows(path: Path, digest: str) -> bool:
    """Whether the cached JSONL at ``path`` (never a link) holds the rows that hash to ``digest``."""
    from trex.events.fsio import check_not_link

    if not check_not_link(path).is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
    except (OSError, ValueError):
        return False
    return rows_hash(rows) == digest


def materialize(recipe: Recipe, home: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] = (),
                row_losses: RowLosses | None = None, loss_key: str = "") -> tuple[str, Path]:
    """Run the recipe and cache its rows; returns (content hash, path of the cached JSONL).

    Identical recipes over identical files are materialised once: an index under
    ``HOME/datasets/index/`` maps the recipe's key (:func:`recipe_key`) to its rows' hash, and a recipe
    seen before is answered from it without reading its sources again (nor scoring rows for cleaning).
    A hit is trusted only when the cached rows still hash to what the index says, and no folder on the
    way is a link; otherwise the recipe runs again and the entry is rewritten."""
    from trex.events.fsio import check_not_link, ensure_dir, write_file_replace

    home = Path(home)
    key = recipe_key(recipe, home, allowed_roots, loss_key)
    index = home / "datasets" / "index" / key[:2] / f"{key}.txt" if key else None
    if index is not None:
        ensure_dir(home, *index.parent.relative_to(home).parts)  # no folder on the way is a link
        hit = _index_hit(home, check_not_link(index))
        if hit is not None:
            return hit
    rows = apply_recipe(recipe, home, allowed_roots, row_losses)
    digest = rows_hash(rows)
    path = dataset_path(home, digest)
    ensure_dir(home, *path.parent.relative_to(home).parts)  # no folder on the way is a link
    if not _holds_rows(path, digest):  # a link there is refused; a damaged copy is rewritten
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
        write_file_replace(path, text.encode("utf-8"))
    if index is not None:
        ensure_dir(home, *index.parent.relative_to(home).parts)
        write_file_replace(index, digest.encode())
    return digest, path
