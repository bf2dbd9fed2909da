"""Generation equals a full forward under every strategy: cached steps, uncached steps and left
padding give the logits of `module(ids)`, soft prompts and adapters included."""

from copy import deepcopy

import pytest
import torch
from hydra.utils import instantiate

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import ByteTokenizer
from lm_lab.finetune.base import is_added
from lm_lab.tasks.sampling import generate_ids
from lm_lab.utils.errors import ConfigError

STRATEGIES = ["full", "head", "partial", "lora", "adapter", "bitfit", "prompt", "ia3"]
ENCODERS = {
    "transformer": ("model=transformer", "model.n_layers=2", "model.positions=rope"),
    "transformer-learned": ("model=transformer", "model.n_layers=1", "model.positions=learned"),
    "bilstm": ("model=bilstm",),
    "hybrid": ("model=hybrid", "model.pattern=LA", "model.positions=sinusoidal"),
}
ATOL = 1e-5  # fp32


@pytest.fixture
def tuned_lm(compose):
    """A tiny LM with `strategy` applied and every added parameter moved off its no-op init
    (a zero adapter or LoRA B would hide a path that skips it)."""

    def _build(encoder: str, strategy: str, *overrides: str):
        cfg = compose(
            "task=generate",
            "tokenizer=byte",
            *ENCODERS[encoder],
            f"finetune={strategy}",
            *overrides,
        )
        torch.manual_seed(0)
        module = build_module(cfg, ByteTokenizer(), None)
        instantiate(cfg.finetune).apply(module)
        with torch.no_grad():
            for name, param in module.named_parameters():
                if is_added(name):
                    param.copy_(torch.randn_like(param) * 0.3)
        return module.eval()

    return _build


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_cached_and_uncached_steps_equal_the_full_forward(encoder, strategy, tuned_lm):
    module = tuned_lm(encoder, strategy)
    x = ids(2, 10)
    with torch.no_grad():
        full = module(x)  # (B, T, V)
        uncached, _ = module.step(x, None, 0)
        first, state = module.step(x[:, :4], None, 0)  # a 4-token prompt
        second, state = module.step(x[:, 4:5], state, 4)  # one token
        rest, _ = module.step(x[:, 5:], state, 5)
    torch.testing.assert_close(uncached, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat([first, second, rest], 1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("strategy", ["prompt", "adapter", "lora"])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_left_padded_prompts_equal_each_row_alone(encoder, strategy, tuned_lm):
    module = tuned_lm(encoder, strategy)
    x, n_pad = ids(3, 8), torch.tensor([3, 0, 1])
    nxt = ids(3, 1, seed=2)
    with torch.no_grad():
        y, state = module.step(x, None, 0, n_pad)
        step, _ = module.step(nxt, state, 8, n_pad)
        for row, pad in enumerate(n_pad.tolist()):
            alone = module(torch.cat([x[row : row + 1, pad:], nxt[row : row + 1]], 1))
            torch.testing.assert_close(y[row, pad:], alone[0, :-1], atol=ATOL, rtol=0)
            torch.testing.assert_close(step[row, 0], alone[0, -1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("strategy", ["prompt", "adapter"])
@pytest.mark.parametrize("encoder", ["transformer", "bilstm"])
def test_greedy_generation_follows_the_full_forward(encoder, strategy, tuned_lm):
    """The tokens generate_ids picks, with and without the cache, are the argmax of a full
    forward over the sequence so far (the reference loop below never calls `step`)."""
    module = tuned_lm(encoder, strategy)
    prompt = ids(1, 5)
    with torch.no_grad():
        seq = prompt
        for _ in range(6):
            logits = module(seq)[:, -1]
            logits[:, module.backbone.embed.padding_idx] = -torch.inf
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    expected = seq[0, 5:].tolist()
    for use_cache in (True, False):
        new = generate_ids(module, prompt.tolist(), 6, temperature=0, use_cache=use_cache)
        assert new[0].tolist() == expected, use_cache


def test_soft_prompt_counts_against_learned_positions(tuned_lm):
    """max_len 16 with an 8-vector prompt leaves 8 positions: a 5-token prompt may get 4 new
    tokens (5 + 4 - 1 fed back = 8), not 5; refused up front, in one line."""
    module = tuned_lm("transformer-learned", "prompt", "model.max_len=16", "finetune.length=8")
    assert generate_ids(module, ids(1, 5).tolist(), 4, temperature=0).shape == (1, 4)
    with pytest.raises(ConfigError, match="max_new_tokens=5"):
        generate_ids(module, ids(1, 5).tolist(), 5, temperature=0)


@pytest.mark.parametrize("strategy", ["prompt", "adapter"])
def test_a_deep_copy_generates_with_its_own_parameters(strategy, tuned_lm):
    """The wrapped step methods are bound per instance: a copy (EMA, SWA) must use its own
    prompt and adapters, not the original's."""
    module = tuned_lm("transformer", strategy)
    copy = deepcopy(module)
    with torch.no_grad():
        for name, param in copy.named_parameters():
            if is_added(name):
                param.mul_(2.0)
        x = ids(1, 6)
        torch.testing.assert_close(copy.step(x, None, 0)[0], copy(x), atol=ATOL, rtol=0)
        assert not torch.allclose(copy(x), module(x))
