"""The preallocated KV cache (written in place, grown by doubling) gives the logits of full
recomputation: over 100 greedy steps, past several reallocations, under left padding, and when
one encoded prefix is continued more than once (ICL, chat)."""

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
from lm_lab.encoders.attention import KVCache

ATOL = 1e-5  # fp32
STEPS = 100
LLAMA = (  # the options SmolLM2 uses: rope, rmsnorm, swiglu, grouped-query attention
    "task=generate",
    "tokenizer=byte",
    "model=transformer",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.n_kv_heads=2",
    "model.positions=rope",
    "model.norm=rmsnorm",
    "model.mlp=swiglu",
    "model.bias=false",
)


@pytest.fixture
def lm(compose):
    torch.manual_seed(0)
    return build_module(compose(*LLAMA), ByteTokenizer(), None).eval()


def greedy(
    lm, ids: torch.Tensor, n_pad: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Cached greedy decoding of STEPS tokens after ids (B, T): the tokens (B, T + STEPS), each
    step's logits (B, STEPS, V) and the first layer's cache after every call."""
    logits, state = lm.step(ids, None, 0, n_pad)  # (B, T, V)
    steps, caches = [logits[:, -1]], [state[0]]
    for offset in range(ids.shape[1], ids.shape[1] + STEPS - 1):
        ids = torch.cat([ids, steps[-1].argmax(-1, keepdim=True)], 1)  # (B, offset + 1)
        logits, state = lm.step(ids[:, -1:], state, offset, n_pad)  # (B, 1, V)
        steps.append(logits[:, -1])
        caches.append(state[0])
    ids = torch.cat([ids, steps[-1].argmax(-1, keepdim=True)], 1)
    return ids, torch.stack(steps, 1), caches


@torch.no_grad()
def test_100_cached_steps_equal_full_recomputation_across_reallocations(lm):
    prompt = torch.randint(1, 256, (1, 5), generator=torch.Generator().manual_seed(1))
    ids, cached, caches = greedy(lm, prompt, None)
    full = lm.step(ids[:, :-1], None, 0, None)[0][:, 4:]  # (1, STEPS, V), recomputed at once
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)
    capacities = [c.buffers.k.shape[2] for c in caches]
    assert capacities[0] == KVCache.MIN_CAPACITY  # a 5-token prompt gets the minimum
    assert sorted(set(capacities)) == [16, 34, 70, 142]  # doubled past every fill, 104 columns
    assert len({id(c.buffers) for c in caches}) == 4  # in place between reallocations


@torch.no_grad()
def test_left_padded_prompts_of_unequal_length_decode_as_each_alone(lm):
    lengths = [3, 12, 7]
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(1, 256, (n,), generator=gen) for n in lengths]
    T = max(lengths)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)  # (B, T), left-padded with 0
    for row, p in enumerate(prompts):
        ids[row, T - len(p) :] = p
    n_pad = torch.tensor([T - n for n in lengths])
    out, cached, _ = greedy(lm, ids, n_pad)
    for row, n in enumerate(lengths):
        alone = out[row : row + 1, T - n : -1]  # (1, n + STEPS - 1), this row without pads
        full = lm.step(alone, None, 0, None)[0][:, n - 1 :]  # (1, STEPS, V)
        torch.testing.assert_close(cached[row : row + 1], full, atol=ATOL, rtol=0)


@torch.no_grad()
def test_a_prefix_continued_twice_and_repeated_keeps_its_own_columns(lm):
    """Continuing one cache twice: neither continuation sees the other's in-place writes."""
    gen = torch.Generator().manual_seed(3)
    prefix, a, b, c = (torch.randint(1, 256, (1, n), generator=gen) for n in (6, 4, 3, 2))
    _, state = lm.step(prefix, None, 0, None)
    _, after_a = lm.step(a, state, 6, None)  # writes columns 6..9 of the prefix's buffer
    via_b = lm.step(b, state, 6, None)[0]  # (1, 3, V), from the prefix again
    full = lm.step(torch.cat([prefix, b], 1), None, 0, None)[0][:, 6:]
    torch.testing.assert_close(via_b, full, atol=ATOL, rtol=0)
    via_a = lm.step(c, after_a, 10, None)[0]  # (1, 2, V), a's columns still a's
    full = lm.step(torch.cat([prefix, a, c], 1), None, 0, None)[0][:, 10:]
    torch.testing.assert_close(via_a, full, atol=ATOL, rtol=0)
    rows = torch.cat([a[:, :3], b])  # (2, 3)
    repeated = lm.backbone.encoder.repeat_state(state, 2)
    h, _ = lm.backbone.step(rows, repeated, 6)  # (2, 3, D)
    full = lm.step(torch.cat([prefix.expand(2, -1), rows], 1), None, 0, None)[0][:, 6:]
    torch.testing.assert_close(lm.head(h), full, atol=ATOL, rtol=0)


def test_a_cache_made_in_inference_mode_continues_under_no_grad(lm):
    """generate_ids runs in inference mode; a chat turn may then feed its cache under no_grad."""
    gen = torch.Generator().manual_seed(4)
    prefix, a = (torch.randint(1, 256, (1, n), generator=gen) for n in (5, 2))
    with torch.inference_mode():
        _, state = lm.step(prefix, None, 0, None)
    with torch.no_grad():
        via_cache = lm.step(a, state, 5, None)[0]  # (1, 2, V)
        full = lm.step(torch.cat([prefix, a], 1), None, 0, None)[0][:, 5:]
    torch.testing.assert_close(via_cache, full, atol=ATOL, rtol=0)
