"""The Llama decoder on the paged KV cache, checked against its own dense path.

Every paged run starts from a cache whose every slot is NaN, so a token read
from a slot nobody wrote (a wrong slot mapping or block table) poisons the
logits instead of passing as a plausible number. Physical blocks are shuffled
so a mapping that only works for blocks 0, 1, 2, ... fails too.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvcache.engine.errors import ConfigError  # noqa: E402
from kvcache.engine.model import (  # noqa: E402
    AttentionMetadata,
    LlamaModel,
    allocate_kv_caches,
    build_attention_metadata,
)
from kvcache.engine.model_config import ModelConfig  # noqa: E402
from kvcache.engine.weights import build_model, load_model, random_state_dict, unpermute_qk  # noqa: E402

TOL = 1e-4  # fp32 through two layers; the kernels alone reach ~1e-6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|``; NaN anywhere counts as infinitely wrong."""
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if torch.isnan(a).any():
        return float("inf")
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module")
def model() -> LlamaModel:
    return load_model("tiny-random", seed=0).model


def tokens(n: int, seed: int, vocab: int = 8192) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def poisoned_caches(model: LlamaModel, num_blocks: int, block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    caches = allocate_kv_caches(model.config, num_blocks, block_size)
    for k, v in caches:
        k.fill_(float("nan"))
        v.fill_(float("nan"))
    return caches


def shuffled_blocks(num_blocks: int, seed: int) -> list[int]:
    """Physical block ids 1..num_blocks-1 in a random order (0 is the null block)."""
    return (torch.randperm(num_blocks - 1, generator=torch.Generator().manual_seed(seed)) + 1).tolist()


def run(model, caches, ids_per_seq, block_ids, num_computed, block_size, all_logits=True):
    """One packed forward of the sequences' new tokens."""
    ids = torch.cat(ids_per_seq)
    positions, attn = build_attention_metadata(
        block_ids, num_computed, [len(x) for x in ids_per_seq], block_size, all_logits=all_logits
    )
    with torch.inference_mode():
        return model(ids, positions, caches, attn)


@pytest.mark.parametrize(("length", "block_size"), [(1, 4), (16, 4), (37, 8), (50, 16)])
def test_paged_prefill_matches_dense(model, length, block_size):
    # A whole prompt in one call: lengths of 1, an exact multiple of the block and a partial last block.
    ids = tokens(length, seed=length)
    blocks = shuffled_blocks(32, seed=length)[: -(-length // block_size)]
    caches = poisoned_caches(model, 32, block_size)
    paged = run(model, caches, [ids], [blocks], [0], block_size)
    with torch.inference_mode():
        dense = model.forward_dense(ids)
    assert paged.shape == (length, model.config.vocab_size)
    assert rel_err(paged, dense) <= TOL
    # The last-token-only path returns exactly the last row, without the other rows' matmul.
    caches = poisoned_caches(model, 32, block_size)
    last = run(model, caches, [ids], [blocks], [0], block_size, all_logits=False)
    assert last.shape == (1, model.config.vocab_size)
    assert rel_err(last[0], dense[-1]) <= TOL


def test_chunked_prefill_then_decode_matches_dense(model):
    # 45 tokens, block size 8 -> 6 shuffled blocks, the last one partial.
    # Fed as a prefill chunk of 20, a chunk of 13, then 12 decode steps of one token.
    block_size, ids = 8, tokens(45, seed=1)
    blocks = shuffled_blocks(16, seed=7)[:6]
    caches = poisoned_caches(model, 16, block_size)
    pieces = [ids[:20], ids[20:33]] + [ids[i : i + 1] for i in range(33, 45)]
    logits, done = [], 0
    for piece in pieces:
        logits.append(run(model, caches, [piece], [blocks], [done], block_size))
        done += len(piece)
    with torch.inference_mode():
        dense = model.forward_dense(ids)
    assert rel_err(torch.cat(logits), dense) <= TOL


def test_prefix_reuse_matches_recompute(model):
    # A: 30 tokens in blocks [5, 2, 9, 4] (block size 8).
    # B: A's first 16 tokens (2 full blocks) + 11 of its own. B's table reuses
    # A's blocks 5 and 2 and appends fresh blocks 11 and 7; only B's 11-token
    # tail is computed.
    block_size = 8
    a = tokens(30, seed=2)
    b = torch.cat([a[:16], tokens(11, seed=3)])
    caches = poisoned_caches(model, 16, block_size)
    run(model, caches, [a], [[5, 2, 9, 4]], [0], block_size)
    a_tail_k = caches[0][0][[9, 4]].clone()

    tail = run(model, caches, [b[16:]], [[5, 2, 11, 7]], [16], block_size, all_logits=False)

    with torch.inference_mode():
        dense = model.forward_dense(b)
    assert rel_err(tail[0], dense[-1]) <= TOL
    # B computed from scratch in a fresh cache agrees too.
    fresh = run(model, poisoned_caches(model, 16, block_size), [b], [[3, 1, 6, 8]], [0], block_size, all_logits=False)
    assert rel_err(tail, fresh) <= TOL
    # B wrote only its own blocks: A's unshared blocks (and their NaN tail) are untouched.
    torch.testing.assert_close(caches[0][0][[9, 4]], a_tail_k, rtol=0, atol=0, equal_nan=True)


def test_packed_batch_matches_each_alone(model):
    # Two sequences of different lengths in one packed prefill call, then one
    # batched decode step (cu_seqlens_q is None: one token each).
    block_size = 4
    s1, s2 = tokens(19, seed=4), tokens(7, seed=5)
    free = shuffled_blocks(24, seed=9)
    b1, b2 = free[:6], free[6:8]
    caches = poisoned_caches(model, 24, block_size)
    packed = run(model, caches, [s1[:-1], s2[:-1]], [b1, b2], [0, 0], block_size)
    step = run(model, caches, [s1[-1:], s2[-1:]], [b1, b2], [18, 6], block_size)
    with torch.inference_mode():
        d1, d2 = model.forward_dense(s1), model.forward_dense(s2)
    assert rel_err(packed[:18], d1[:-1]) <= TOL
    assert rel_err(packed[18:], d2[:-1]) <= TOL
    assert rel_err(step, torch.stack([d1[-1], d2[-1]])) <= TOL


def test_forward_keywords_select_rows_and_implementation(model):
    # logits_indices= overrides the metadata's rows; impl= picks the kernel
    # (the float64 reference must agree with the default torch one).
    ids, block_size = tokens(11, seed=12), 4
    caches = poisoned_caches(model, 8, block_size)
    positions, attn = build_attention_metadata([[6, 1, 4]], [0], [11], block_size)
    with torch.inference_mode():
        rows = model(ids, positions, caches, attn, logits_indices=torch.tensor([2, 7]))
        ref = model(ids, positions, poisoned_caches(model, 8, block_size), attn, impl="reference")
        dense = model.forward_dense(ids)
    assert rel_err(rows, dense[[2, 7]]) <= TOL
    assert rel_err(ref, dense[-1:]) <= TOL
    with pytest.raises(ValueError, match="unknown impl"):
        model(ids, positions, caches, attn, impl="nope")


def test_metadata_layout():
    # Block size 4, blocks [7, 2, 9]: 5 tokens cached, 4 new -> positions 5..8.
    positions, attn = build_attention_metadata([[7, 2, 9], [3]], [5, 0], [4, 2], 4)
    assert positions.tolist() == [5, 6, 7, 8, 0, 1]
    assert attn.slot_mapping.tolist() == [2 * 4 + 1, 2 * 4 + 2, 2 * 4 + 3, 9 * 4 + 0, 3 * 4, 3 * 4 + 1]
    assert attn.block_table.tolist() == [[7, 2, 9], [3, 0, 0]]
    assert attn.seq_lens.tolist() == [9, 2]
    assert attn.cu_seqlens_q.tolist() == [0, 4, 6]
    assert attn.logits_indices.tolist() == [3, 5]
    assert attn.block_table.dtype == attn.seq_lens.dtype == attn.cu_seqlens_q.dtype == torch.int32
    assert attn.slot_mapping.dtype == positions.dtype == torch.int64
    with pytest.raises(ValueError, match="cannot hold"):
        build_attention_metadata([[7]], [3], [2], 4)


def test_forward_rejects_mismatched_inputs(model):
    caches = allocate_kv_caches(model.config, 4, 4)
    positions, attn = build_attention_metadata([[1]], [0], [2], 4)
    with pytest.raises(ValueError, match="pairs"):
        model(tokens(2, 0), positions, caches[:1], attn)
    with pytest.raises(ValueError, match=r"\[T\]"):
        model(tokens(3, 0), positions, caches, attn)
    assert isinstance(attn, AttentionMetadata)


def test_tiny_random_is_deterministic():
    ids = tokens(12, seed=6)
    with torch.inference_mode():
        first = load_model("tiny-random", seed=0).model.forward_dense(ids)
        again = load_model("tiny-random", seed=0).model.forward_dense(ids)
        other = load_model("tiny-random", seed=1).model.forward_dense(ids)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # The logits are not degenerate: attention is far from uniform, so positions matter.
    assert first.std() > 0.1


def test_interleaved_rope_on_permuted_weights_equals_neox():
    # llama.cpp stores Q/K rows permuted for interleaved RoPE. Permuting the
    # rows ourselves (the converter's reshape(h, 2, D/2).swapaxes) and running
    # interleaved RoPE must give the same model; unpermute_qk must undo it.
    cfg = ModelConfig.tiny_random()
    state = random_state_dict(cfg, seed=3)

    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    permuted = dict(state)
    for i in range(cfg.num_hidden_layers):
        q, k = f"layers.{i}.self_attn.q_proj.weight", f"layers.{i}.self_attn.k_proj.weight"
        permuted[q] = permute(state[q], cfg.num_attention_heads)
        permuted[k] = permute(state[k], cfg.num_key_value_heads)
        assert torch.equal(unpermute_qk(permuted[q], cfg.num_attention_heads), state[q])
        assert torch.equal(unpermute_qk(permuted[k], cfg.num_key_value_heads), state[k])
    cfg_i = ModelConfig.tiny_random()
    cfg_i.rope_style = "interleaved"
    ids = tokens(20, seed=8)
    with torch.inference_mode():
        neox = build_model(cfg, state, torch.float32).forward_dense(ids)
        inter = build_model(cfg_i, permuted, torch.float32).forward_dense(ids)
        wrong = build_model(cfg, permuted, torch.float32).forward_dense(ids)
    assert rel_err(inter, neox) <= TOL
    assert rel_err(wrong, neox) > 1e-2  # the permutation matters


def test_bfloat16_weights_run_close_to_fp32():
    ids = tokens(10, seed=10)
    with torch.inference_mode():
        ref = load_model("tiny-random").model.forward_dense(ids)
        half = load_model("tiny-random", dtype=torch.bfloat16).model
        assert half.embed_tokens.weight.dtype == torch.bfloat16
        out = half.forward_dense(ids)
    assert out.dtype == torch.float32
    assert rel_err(out, ref) <= 0.1


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_key_value_heads", 3, "must divide"),
        ("hidden_size", 0, "positive integer"),
        ("head_dim", 15, "even"),
        ("rope_theta", -1.0, "positive number"),
        ("rope_style", "yarn", "rope style"),
        ("tie_word_embeddings", "yes", "bool"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    kwargs = {f: getattr(ModelConfig.tiny_random(), f) for f in ModelConfig.__dataclass_fields__}
    kwargs[field] = value
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_type": "gpt_neox"}, "model_type 'gpt_neox'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"num_key_value_heads": 5}, "must divide"),
        ({"intermediate_size": None}, "intermediate_size"),
    ],
)
def test_hf_config_rejects_what_the_engine_cannot_run(change, match):
    raw = {**ModelConfig.tiny_random().to_hf(), **change}
    with pytest.raises(ConfigError, match=rf"config\.json: .*{match}"):
        ModelConfig.from_hf(raw, "config.json")
    assert ModelConfig.from_hf(ModelConfig.tiny_random().to_hf()) == ModelConfig.tiny_random()
