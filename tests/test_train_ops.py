"""The GPU-path options (packing, chunked cross-entropy) give the same loss as the plain path."""
import torch

from trex.train.ops import chunked_causal_lm_loss, pack_examples, pad_batch


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n in (5, 9, 3, 12, 7):
        ids = torch.randint(3, 50, (n,), generator=g).tolist()
        out.append((ids, [-100] * (n // 2) + ids[n // 2:]))
    return out


def test_chunked_ce_matches_full_loss_and_grad():
    model = tiny_llama()
    b = pad_batch(examples(), 0)
    ref = model(**{k: b[k] for k in ("input_ids", "attention_mask")}, labels=b["labels"]).loss
    hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    w = model.lm_head.weight
    got = chunked_causal_lm_loss(hidden, w, b["labels"], chunk_size=4)
    assert torch.allclose(ref, got, atol=1e-5)
    g1 = torch.autograd.grad(ref, w)[0]
    hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    g2 = torch.autograd.grad(chunked_causal_lm_loss(hidden, w, b["labels"], chunk_size=3), w)[0]
    assert torch.allclose(g1, g2, atol=1e-5)


def test_packing_keeps_examples_apart():
    model = tiny_llama()
    ex = examples()
    b = pad_batch(ex, 0)
    ref = model(**{k: b[k] for k in ("input_ids", "attention_mask")}, labels=b["labels"]).loss
    p = pack_examples(ex, 20, 0)
    assert p["input_ids"].shape[1] == 20 and p["input_ids"].shape[0] < len(ex)
    assert int((p["labels"] != -100).sum()) == int((b["labels"] != -100).sum())
    got = model(input_ids=p["input_ids"], position_ids=p["position_ids"], labels=p["labels"], use_cache=False).loss
    assert torch.allclose(ref, got, atol=1e-5), (ref, got)


def test_loop_with_packing_and_chunked_ce(arith_base, tmp_path):
    """The worker loop's GPU-path options run (here on CPU) and learn."""
    from ftbench.arith import subtraction_split
    from trex.tasks import write_jsonl
    from trex.plan import example_plan
    from trex.train.loop import Reporter, WorkerSpec, run

    data = write_jsonl(subtraction_split(0)[0][:500], tmp_path / "d.jsonl")
    plan = example_plan(max_steps=15, learning_rate=3e-3, batch_size=32, max_seq_len=32, lr_schedule="constant")
    spec = WorkerSpec(plan=plan.model_dump(mode="json"), base_model_dir=str(arith_base), data_path=str(data),
                      out_dir=str(tmp_path / "out"), progress_path=str(tmp_path / "p.jsonl"), threads=1,
                      progress_every=5, packing=True, chunked_ce=True)
    res = run(spec, Reporter(spec.progress_path))
    assert res["steps"] == 15
    assert res["train_metrics"]["final_loss"] < res["train_metrics"]["first_loss"]
    assert (tmp_path / "out" / "adapter_config.json").is_file()
