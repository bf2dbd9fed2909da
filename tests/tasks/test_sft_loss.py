"""task=sft's loss: cross-entropy on the reply tokens only, weighted by token across a batch and
across a validation split (not a mean of per-example means), the same packed or not."""

import math

import pytest
import torch
import torch.nn.functional as F

from lm_lab.build import build_module
from lm_lab.data.loaders.instructions import IGNORE, Example, collate
from lm_lab.data.tokenization.conversation import PlainTemplate, encode_conversation
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.tasks.sft import InstructionModel

TEMPLATE = PlainTemplate(system="{content}|", user="U:{content}|", assistant="A:", end="#")


@pytest.fixture
def model(compose):
    cfg = compose("task=sft", "tokenizer=char", "model.n_layers=1", "model.positions=rope")
    tokenizer = CharTokenizer().fit(["U:|A:# abcdefghijklmnopqrstuvwxyz"])
    torch.manual_seed(0)
    module = build_module(cfg, tokenizer, None)
    assert isinstance(module, InstructionModel) and module.template.end == "\n<|end|>\n"
    return module.eval()


def example(tokenizer, prompt: str, reply: str) -> Example:
    conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    ids, targets = encode_conversation(tokenizer, conversation, TEMPLATE)
    return Example(torch.tensor(ids[:-1]), torch.tensor(targets[1:]))


def hand_losses(model, batch) -> list[float]:
    """Cross-entropy of every scored position, from the model's own logits, in row order."""
    logits = model(batch["input_ids"])  # (B, T, V)
    losses = []
    for b, t in (batch["targets"] != IGNORE).nonzero().tolist():
        logp = torch.log_softmax(logits[b, t].double(), -1)
        losses.append(-float(logp[batch["targets"][b, t]]))
    return losses


def test_a_hand_built_pair_scores_exactly_the_reply_positions(model):
    tok = model.tokenizer
    batch = collate([[example(tok, "ab", "cd")]], tok.pad_id, packed=False)  # "U:ab|A:cd#"
    scored = (batch["targets"][0] != IGNORE).nonzero().flatten().tolist()
    assert scored == [6, 7, 8]  # inputs ":", "c", "d" predict "c", "d", "#"
    assert tok.decode(batch["targets"][0, scored].tolist()) == "cd#"
    with torch.no_grad():
        loss = model.loss(batch)[0]
        expected = sum(hand_losses(model, batch)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_batch_loss_is_the_mean_over_all_its_reply_tokens(model):
    tok = model.tokenizer
    short, long = example(tok, "abcdef", "g"), example(tok, "h", "ijklmn")  # 2 and 7 scored
    batch = collate([[short], [long]], tok.pad_id, packed=False)
    with torch.no_grad():
        losses = hand_losses(model, batch)
        loss = model.loss(batch)[0].item()
    assert len(losses) == 9
    assert loss == pytest.approx(sum(losses) / 9, rel=1e-5)
    per_example = (sum(losses[:2]) / 2 + sum(losses[2:]) / 7) / 2
    assert not math.isclose(loss, per_example, rel_tol=1e-3)  # not a mean of example means


def test_validation_weighs_each_batch_by_its_reply_tokens(model):
    tok = model.tokenizer
    batches = [
        collate([[example(tok, "abcdef", "g")]], tok.pad_id, packed=False),
        collate([[example(tok, "h", "ijklmn")]], tok.pad_id, packed=False),
    ]
    with torch.no_grad():
        for batch in batches:
            model.eval_step(batch, "val")
        losses = [loss for batch in batches for loss in hand_losses(model, batch)]
    assert model.val_loss.compute().item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_packing_leaves_the_loss_unchanged(model):
    tok = model.tokenizer
    a, b = example(tok, "abc", "de"), example(tok, "f", "ghij")
    with torch.no_grad():
        apart = model.loss(collate([[a], [b]], tok.pad_id, packed=False))[0]
        packed = model.loss(collate([[a, b]], tok.pad_id, packed=True))[0]
    assert packed.item() == pytest.approx(apart.item(), abs=1e-5)


def test_only_the_replies_are_projected_onto_the_vocabulary(model):
    """sft data says its targets are sparse: the same loss from the scored states alone."""
    tok = model.tokenizer
    batch = collate([[example(tok, "abcdefghij", "k")]], tok.pad_id, packed=False)
    with torch.no_grad():
        dense = F.cross_entropy(
            model(batch["input_ids"]).flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE
        )
        model.sparse_targets = True
        sparse, logits, _ = model.loss(batch)
    assert logits.shape[0] == 2 and sparse.item() == pytest.approx(dense.item(), rel=1e-5)


def test_a_prompt_of_ids_is_generated_after_as_it_is(model, monkeypatch):
    """generate.py's chat path passes `encode_prompt` ids: no BOS before them, no re-encoding."""
    from lm_lab.tasks import sampling

    tok, seen = model.tokenizer, []
    monkeypatch.setattr(tok, "bos_ids", [5])  # what a text prompt would start with
    monkeypatch.setattr(tok, "encode", lambda text: pytest.fail(f"re-encoded {text!r}"))
    monkeypatch.setattr(sampling, "generate_ids", lambda _, prompts, *a, **k: seen.extend(prompts))
    sampling.generate_completions(model, tok, [[3, 4, 6]], max_new_tokens=2)
    assert seen == [[3, 4, 6]]
