"""Prefix-cached ICL scoring equals scoring every whole prompt (transformer, LSTM, hybrid)."""

import pytest
import torch

from lm_lab.build import build_module
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.eval.icl import (
    Prompter,
    PromptTemplate,
    label_logprobs,
    lm_logits,
    prefix_cached,
    whole_prompt,
)

TOK = CharTokenizer().fit(["abcdefghijklmnopqrstuvwxyz :\n"])
TEMPLATE = PromptTemplate(demo="{text}: {label}", verbalizers={"neg": "bad", "pos": "good"})
DEMOS = [("a fine film", "pos"), ("dull", "neg"), ("so good", "pos")]
QUERIES = ["nice", "a very long and boring plot", "ok"]


@pytest.mark.parametrize("model", ["transformer", "bilstm", "hybrid"])
def test_prefix_cached_scores_equal_whole_prompt_scores(compose, model):
    torch.manual_seed(0)
    module = build_module(compose("task=generate", f"model={model}"), TOK, None).eval()
    prompts = Prompter(TEMPLATE, TOK).prompts(DEMOS, QUERIES)
    conts = [TOK.encode(" bad"), TOK.encode(" good")]
    args = (prompts.queries, conts, TOK.pad_id, 2)  # batch 2: padding and several batches
    cached = label_logprobs(prefix_cached(module, prompts.prefix), *args)
    whole = label_logprobs(whole_prompt(lm_logits(module), prompts.prefix), *args)
    assert cached.shape == (3, 2) and cached.abs().min() > 0
    torch.testing.assert_close(cached, whole, atol=1e-4, rtol=0)
