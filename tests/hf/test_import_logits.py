"""lm_lab's imported model computes what transformers computes: logits and greedy tokens, on
right- and left-padded batches, for every family and variant of tests/hf/conftest.py."""

import pytest
import torch

from lm_lab.hf.load import load_language_model
from lm_lab.tasks.sampling import generate_ids, left_pad

transformers = pytest.importorskip("transformers")  # the dev extra

FAMILIES = ["gpt2", "gpt2_untied", "llama", "mistral", "qwen2", "gpt_neox"]
FAMILIES += ["gpt_neox_no_attention_bias"]  # every folder of tests/hf/conftest.py
PROMPTS = ["the movie was", "I loved the music but", "one of"]  # unequal lengths


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def both(folder):
    ours, _ = load_language_model(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return ours, theirs


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers_on_a_right_padded_batch(hf_dirs, family):
    ours, theirs = both(hf_dirs[family])
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (3, 24))
    lengths = torch.tensor([24, 17, 9])
    pad_mask = torch.arange(24)[None] >= lengths[:, None]  # (B, T) True at padding
    ids = ids.masked_fill(pad_mask, ours.tokenizer.pad_id)
    expected = theirs(input_ids=ids, attention_mask=(~pad_mask).long()).logits
    got = ours(ids, pad_mask)
    real = ~pad_mask
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)
    single = ids[:1]  # one sequence, no mask at all
    torch.testing.assert_close(ours(single), theirs(input_ids=single).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_with_cache_equals_transformers(hf_dirs, family):
    ours, theirs = both(hf_dirs[family])
    prompt = ours.tokenizer.bos_ids + ours.tokenizer.encode("the movie was")
    pad = ours.tokenizer.pad_id
    got = generate_ids(ours, [prompt], 20, temperature=0, eos_ids=ours.tokenizer.eos_ids)[0]
    out = theirs.generate(
        torch.tensor([prompt]),
        do_sample=False,
        max_new_tokens=20,
        pad_token_id=pad,
        suppress_tokens=[pad],  # lm_lab never samples the pad id
    )[0, len(prompt) :]
    expected = out[: len(got)] if ours.tokenizer.eos_id in got.tolist() else out
    assert got.tolist() == expected.tolist()
    assert len(set(got.tolist())) >= 6  # a varied continuation, not one token repeated


def until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("family", FAMILIES)
def test_a_left_padded_batch_equals_transformers_left_padded_batch(hf_dirs, family):
    """Prompts of unequal length, left-padded: lm_lab's n_pad against transformers' own
    attention_mask and position ids (each row counts from its first real token)."""
    ours, theirs = both(hf_dirs[family])
    tok = ours.tokenizer
    prompts = [tok.bos_ids + tok.encode(p) for p in PROMPTS]
    ids, n_pad = left_pad(prompts, tok.pad_id)  # (B, T), (B,)
    assert n_pad is not None and n_pad.min() == 0 < n_pad.max()
    mask = (torch.arange(ids.shape[1])[None] >= n_pad[:, None]).long()  # (B, T) 1 at real
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    expected = theirs(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    got, _ = ours.step(ids, None, 0, n_pad)  # (B, T, V)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)
    new = generate_ids(ours, prompts, 12, temperature=0, eos_ids=tok.eos_ids)
    out = theirs.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=12,
        pad_token_id=tok.pad_id,
        suppress_tokens=[tok.pad_id],
    )[:, ids.shape[1] :]
    for row in range(len(prompts)):
        mine = until_eos(new[row].tolist(), tok.eos_id)
        assert mine == until_eos(out[row].tolist(), tok.eos_id)[: len(mine)]
        assert len(set(mine)) >= 3


def test_bfloat16_loads_straight_into_bfloat16_parameters(hf_dirs):
    ours, _ = load_language_model(hf_dirs["llama"], dtype=torch.bfloat16)
    reference, _ = load_language_model(hf_dirs["llama"])
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    ids = torch.tensor([[1, 5, 17, 33, 9, 60, 61, 7]])
    torch.testing.assert_close(ours(ids).float(), reference(ids), atol=0.1, rtol=0.05)
