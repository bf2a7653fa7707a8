"""Runs a real model on every scheduled step, with its K/V in the engine's pages.

The scheduler decides *which* tokens of which requests run in a step and which
physical blocks hold them; this executor turns that into one packed forward
pass::

    chunk of request r: positions [start, start + n)
        input_ids     <- r's tokens at those positions (prompt, then replies)
        slot_mapping  <- block_ids[p // block_size] * block_size + p % block_size
        block_table   <- r's whole block table (hit blocks first)
        seq_len       <- start + n   (cached prefix + this chunk)

A prefix-cache hit therefore really reads K/V that an earlier request wrote into
the same physical block: nothing is recomputed for it. ``--verify`` checks that
this is exact: each request's last-prompt-token logits are compared with the
same prompt computed from scratch in a separate, empty cache.

Token ids come from the request (prompt, then the reply when the trace records
it: teacher forcing). Without a recorded reply, decoding is greedy. Ids beyond
the model's vocabulary (another tokenizer's, or stand-in ids for block-hash
traces) are folded into it modulo the vocabulary size: equal ids still give
equal K/V, which is all the cache needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kvcache.engine.request import Request


@dataclass(slots=True)
class ComputeStats:
    """What the model did over a replay (wall-clock, on this machine)."""

    steps: int = 0
    prefill_tokens: int = 0  # prompt tokens run through the model
    decode_tokens: int = 0  # reply tokens fed back (teacher-forced or greedy)
    prefill_tokens_skipped: int = 0  # prompt tokens served from cached pages
    greedy_tokens: int = 0  # tokens chosen by argmax (no recorded reply)
    forward_seconds: float = 0.0
    verify_requests: int = 0
    verify_max_rel_err: float = 0.0
    verify_worst_request: str | None = None

    @property
    def tokens_per_second(self) -> float:
        done = self.prefill_tokens + self.decode_tokens
        return done / self.forward_seconds if self.forward_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "prefill_tokens_skipped": self.prefill_tokens_skipped,
            "greedy_tokens": self.greedy_tokens,
            "forward_seconds": round(self.forward_seconds, 4),
            "tokens_per_second": round(self.tokens_per_second, 1),
        }


def relative_error(got: Any, want: Any) -> float:
    """``max|got - want| / max|want|`` in float64 (the kernels' definition)."""
    g, w = got.double(), want.double()
    scale = w.abs().max().item()
    return (g - w).abs().max().item() / (scale if scale > 0 else 1.0)


class ModelExecutor:
    """The scheduler's :class:`~kvcache.engine.scheduler.StepExecutor` over a model.

    Args:
        loaded: a model from :func:`kvcache.engine.weights.load_model`.
        num_blocks: blocks in the engine's pool (block 0 included); one K and
            one V tensor of ``[num_blocks, block_size, Hkv, D]`` per layer.
        block_size: tokens per block (the engine's).
        verify: recompute every prompt from scratch and compare logits.
        impl: paged-attention implementation (see :func:`kvcache.kernels.paged_attention`).
        keep_outputs: keep each finished request's generated token ids in
            :attr:`outputs` (tests and callers that want the text).
    """

    def __init__(
        self, loaded: Any, num_blocks: int, block_size: int, *, verify: bool = False, impl: str = "auto",
        keep_outputs: bool = False,
    ) -> None:
        import torch

        from kvcache.engine.model import allocate_kv_caches

        self.torch = torch
        self.model = loaded.model
        self.config = loaded.config
        self.vocab = self.config.vocab_size
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.impl = impl
        self.verify = verify
        self.dtype = next(iter(self._parameters()), torch.zeros(0)).dtype
        self.device = torch.device("cpu")
        self.kv_caches = allocate_kv_caches(self.config, num_blocks, block_size, self.dtype, self.device)
        self._scratch: list[Any] | None = None
        self._scratch_blocks = 0
        self._tokens: dict[str, list[int]] = {}
        self._verified: set[str] = set()
        self._admitted: set[str] = set()  # requests whose first chunk since (re)admission is still to come
        self.keep_outputs = keep_outputs
        self.outputs: dict[str, list[int]] = {}  # request id -> tokens after the prompt (keep_outputs)
        self.stats = ComputeStats()

    def _parameters(self) -> Any:
        params = getattr(self.model, "parameters", None)
        return params() if callable(params) else iter(())

    # ------------------------------------------------------------ the protocol
    def execute(self, batch: Any) -> None:
        """Run one scheduled step: every chunk of ``batch`` in one packed forward."""
        torch = self.torch
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        seq_lens: list[int] = []
        cu = [0]
        tables: list[list[int]] = []
        sample_rows: list[int] = []
        sampled_chunks: list[Any] = []
        for chunk in batch.chunks:
            req: Request = chunk.request
            toks = self._tokens_for(req)
            start, n = chunk.start, chunk.num_tokens
            if req.request_id not in self._admitted:
                # The first chunk after (re)admission starts after the cache hit.
                self._admitted.add(req.request_id)
                self.stats.prefill_tokens_skipped += min(start, req.kv_prompt_tokens)
            end = start + n
            if end > len(toks):
                raise AssertionError(
                    f"scheduler bug: request {req.request_id} scheduled up to token {end} but only {len(toks)} exist"
                )
            table = chunk.block_ids
            ids.extend(toks[start:end])
            positions.extend(range(start, end))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            seq_lens.append(end)
            cu.append(cu[-1] + n)
            tables.append(table)
            prompt = req.kv_prompt_tokens
            if start < prompt:
                self.stats.prefill_tokens += min(end, prompt) - start
            self.stats.decode_tokens += max(0, end - max(start, prompt))
            if chunk.samples:
                sample_rows.append(cu[-1] - 1)
                sampled_chunks.append(chunk)
        if not ids:
            return
        width = max(map(len, tables))
        block_table = torch.zeros((len(tables), width), dtype=torch.int32)
        for row, table in enumerate(tables):
            block_table[row, : len(table)] = torch.tensor(table, dtype=torch.int32)
        from kvcache.engine.model import AttentionMetadata

        attn = AttentionMetadata(
            block_table=block_table,  # [B, max_blocks]
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),  # [B]
            # None when every chunk is one decode token: the kernels' decode path
            cu_seqlens_q=None if cu[-1] == len(cu) - 1 else torch.tensor(cu, dtype=torch.int32),  # [B + 1]
            slot_mapping=torch.tensor(slots, dtype=torch.int64),  # [T]
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = self.model.forward(
                torch.tensor(ids, dtype=torch.int64),  # [T]
                torch.tensor(positions, dtype=torch.int64),  # [T]
                self.kv_caches,
                attn,
                logits_indices=torch.tensor(sample_rows, dtype=torch.int64) if sample_rows else None,
                impl=self.impl,
            )  # [len(sample_rows), V]
        self.stats.forward_seconds += time.perf_counter() - t0
        self.stats.steps += 1
        for row, chunk in enumerate(sampled_chunks):
            self._sample(chunk, logits[row])

    def finish(self, request: Request) -> None:
        """The request is done: forget its tokens (keep its outputs if asked)."""
        toks = self._tokens.pop(request.request_id, None)
        if self.keep_outputs and toks is not None:
            self.outputs[request.request_id] = toks[request.kv_prompt_tokens :]
        self._verified.discard(request.request_id)
        self._admitted.discard(request.request_id)

    def preempted(self, request: Request) -> None:
        """Recompute preemption keeps the tokens; its pages are the pool's again."""
        self._admitted.discard(request.request_id)

    # ------------------------------------------------------------ internals
    def _tokens_for(self, req: Request) -> list[int]:
        toks = self._tokens.get(req.request_id)
        if toks is None:
            if req.token_ids is None:
                raise ValueError(f"request {req.request_id} has no token ids; build the stream with keep_token_ids=True")
            vocab = self.vocab
            toks = [t % vocab for t in req.token_ids[: req.kv_prompt_tokens]]
            self._tokens[req.request_id] = toks
        return toks

    def _sample(self, chunk: Any, row: Any) -> None:
        """Append the next token: the recorded reply's (teacher forcing), else argmax."""
        req: Request = chunk.request
        toks = self._tokens[req.request_id]
        length = chunk.start + chunk.num_tokens
        if length == req.kv_prompt_tokens and req.request_id not in self._verified:
            self._verified.add(req.request_id)
            if self.verify:
                self._verify(req, toks[:length], row)
        if length < len(toks):
            return  # recomputing after preemption: the token is already known
        recorded = req.token_ids
        if recorded is not None and length < len(recorded):
            toks.append(recorded[length] % self.vocab)
        else:
            toks.append(int(row.argmax().item()))
            self.stats.greedy_tokens += 1

    def _verify(self, req: Request, prompt: list[int], logits: Any) -> None:
        """Last-prompt-token logits against the prompt computed alone in an empty cache."""
        torch = self.torch
        from kvcache.engine.model import AttentionMetadata, allocate_kv_caches

        bs = self.block_size
        n = len(prompt)
        need = -(-n // bs)
        if need > self._scratch_blocks:
            self._scratch = allocate_kv_caches(self.config, need, bs, self.dtype, self.device)
            self._scratch_blocks = need
        attn = AttentionMetadata(
            block_table=torch.arange(need, dtype=torch.int32).unsqueeze(0),  # [1, need]
            seq_lens=torch.tensor([n], dtype=torch.int32),
            cu_seqlens_q=torch.tensor([0, n], dtype=torch.int32),
            slot_mapping=torch.arange(n, dtype=torch.int64),
        )
        with torch.inference_mode():
            scratch = self.model.forward(
                torch.tensor(prompt, dtype=torch.int64), torch.arange(n, dtype=torch.int64), self._scratch, attn,
                logits_indices=torch.tensor([n - 1], dtype=torch.int64), impl=self.impl,
            )[0]
        err = relative_error(logits, scratch)
        s = self.stats
        s.verify_requests += 1
        if err >= s.verify_max_rel_err:
            s.verify_max_rel_err = err
            s.verify_worst_request = req.request_id
