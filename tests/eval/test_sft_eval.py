"""eval.py mode=sft: greedy answers to held-out conversations, scored per kind; on a tiny LM
trained here (subprocess and in-process), a scripted model (where generation stops), and the
real SmolLM2 (slow)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lm_lab.build import load_module
from lm_lab.data.tokenization.conversation import IGNORE, PlainTemplate, encode_conversation
from lm_lab.eval.sft import response_losses, responses
from lm_lab.evaluate import run as evaluate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [
    {"prompt": "Is the sky blue or red?", "response": "blue", "kind": "classify"},
    {"prompt": "Is grass green or pink?", "response": "green", "kind": "classify"},
    {"prompt": "What does a cat say?", "response": "A cat says meow.", "kind": "qa"},
]


def write_conversations(folder: Path) -> Path:
    """data=jsonl conversations (prompt/response with a kind), the same in every split."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "validation", "test")):
        lines = [json.dumps(r | {"prompt": f"{r['prompt']} ({split})"}) for r in RECORDS]
        (folder / f"{split}.jsonl").write_text("\n".join(lines[i:] + lines[:i]) + "\n")
    return folder


@pytest.fixture(scope="module")
def lm_ckpt(module_compose, tmp_path_factory) -> Path:
    """A char-level rope LM (no EOS id, no chat template), trained a few steps on text."""
    folder = tmp_path_factory.mktemp("text")
    template = PlainTemplate()  # its text, so that every character of a prompt is known
    text = "".join(
        f"{template.user.format(content=r['prompt'])}{template.assistant}{r['response']}{template.end}"
        for r in RECORDS
    )
    for split in ("train", "validation"):
        (folder / f"{split}.txt").write_text(f"{text} (train) (validation) (test)\n" * 10)
    cfg = module_compose(
        "task=generate",
        "data=text",
        f"data.root={folder}",
        "tokenizer=char",
        "model.n_layers=1",
        "trainer.limit_train_batches=4",
    )
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"


def eval_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "eval.py", "mode=sft", f"paths.log_dir={tmp_path / 'logs'}"]
    return subprocess.run(
        [*argv, *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def run_dir(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "logs").glob("*/runs/*")
    return found


def test_eval_sft_writes_scores_table_and_samples(lm_ckpt, tmp_path):
    data = write_conversations(tmp_path / "conversations")
    proc = eval_cli(
        tmp_path, f"ckpt_path={lm_ckpt}", "data=jsonl", f"data.root={data}", "sft.max_new_tokens=6"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "sft" and metrics["template"] == "PlainTemplate"
    scores = metrics["scores"]
    assert list(scores) == ["classify", "qa", "overall"] or set(scores) == {
        "classify",
        "qa",
        "overall",
    }
    assert scores["classify"]["n"] == 2 and scores["qa"]["n"] == 1 and scores["overall"]["n"] == 3
    for values in scores.values():
        assert 0 <= values["exact_match"] <= 1 and 0 <= values["rouge_l"] <= 1
        assert values["response_ppl"] > 1 and values["response_tokens"] > 0
    table = (out / "sft.md").read_text()
    assert table.startswith("| kind | n | exact_match | rouge_l | response_ppl |")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and {"prompt", "reference", "response", "kind"} <= set(samples[0])
    by_reference = {s["reference"]: s for s in samples}
    assert set(by_reference) == {"blue", "green", "A cat says meow."}
    # the plain template rendered the test split's prompt; the answer is at most 6 characters
    assert by_reference["blue"]["prompt"].startswith("### User:\nIs the sky blue or red? (test)")
    assert by_reference["blue"]["prompt"].endswith("### Assistant:\n")
    assert all(len(s["response"]) <= 6 for s in samples)


def test_bad_settings_fail_in_one_line_before_loading(tmp_path):
    proc = eval_cli(tmp_path, "ckpt_path=no/such.ckpt", "sft.max_new_tokens=0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: sft.max_new_tokens=0: must be an integer >= 1"
    )


def eval_config(compose, tmp_path, *overrides):
    cfg = compose("mode=sft", *overrides, config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    return cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=pydoc"], "not an SFT source"),
        (["sft.max_prompts=0"], "sft.max_prompts=0: must be an integer >= 1, or null"),
        (["sft.batch_size=1.5"], "sft.batch_size=1.5: must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_line(overrides, message, compose, tmp_path, lm_ckpt):
    with pytest.raises(ConfigError, match=message):
        evaluate(eval_config(compose, tmp_path, f"ckpt_path={lm_ckpt}", *overrides))


def test_a_classifier_checkpoint_cannot_answer(compose, tmp_path):
    data = tmp_path / "csv"
    data.mkdir()
    for split, noun in (("train", "film"), ("validation", "plot")):  # no text in both splits
        rows = f"good {noun},pos\nbad {noun},neg\n" * 8
        (data / f"{split}.csv").write_text("text,label\n" + rows)
    cfg = compose("task=classify", "data=csv", f"data.root={data}", "tokenizer=char")
    cfg.trainer.limit_train_batches = 1
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    conversations = write_conversations(tmp_path / "conversations")
    with pytest.raises(ConfigError, match="a classify checkpoint cannot answer; mode=sft needs"):
        evaluate(
            eval_config(
                compose, tmp_path, f"ckpt_path={ckpt}", "data=jsonl", f"data.root={conversations}"
            )
        )


class ScriptedLM(nn.Module):
    """Greedy decoding of it writes `script[last prompt id]`, one id per step: the logits of
    each step put all their mass on the next scripted id."""

    def __init__(self, script: dict[int, list[int]], vocab: int, tokenizer: object) -> None:
        super().__init__()
        self.script, self.vocab, self.tokenizer = script, vocab, tokenizer
        embed = nn.Embedding(vocab, 4, padding_idx=0)
        self.backbone = SimpleNamespace(embed=embed, encoder=SimpleNamespace(max_len=None))

    def step(self, ids, state, offset, n_pad=None, last_only=False):
        rows, k = (ids[:, -1].tolist(), 0) if state is None else state  # k ids generated so far
        nxt = torch.tensor([self.script[row][k] for row in rows])  # (B,)
        logits = F.one_hot(nxt, self.vocab).float()[:, None]  # (B, 1, V)
        return logits.expand(-1, 1 if last_only else ids.shape[1], -1), (rows, k + 1)


class Letters:
    """ids 3.. are the letters a.., 1 is EOS, 2 is the "|" of a stop text."""

    eos_ids, bos_ids = [1], []
    pad_id = 0

    def decode(self, ids: list[int]) -> str:
        return "".join("?#|"[i] if i < 3 else chr(ord("a") + i - 3) for i in ids)


def test_an_answer_ends_at_the_first_eos_or_stop_text():
    a, b, c, eos, bar = 3, 4, 5, 1, 2
    script = {3: [a, b, eos, c, c, c], 4: [a, a, a, a, a, a], 5: [b, bar, c, c, c, c]}
    model = ScriptedLM(script, vocab=8, tokenizer=Letters())
    prompts = [[3], [3, 5, 4], [4, 5]]  # unequal lengths: left padding
    assert responses(model, prompts, None, 6, batch_size=3) == ["ab", "aaaaaa", "b|cccc"]
    # a stop text (the plain template's end, for a tokenizer without EOS) cuts there too;
    # batches of 2 by prompt length: the rows come back in the prompts' order
    assert responses(model, prompts, "|", 4, batch_size=2) == ["ab", "aaaa", "b"]


def test_response_perplexity_is_the_teacher_forced_loss(lm_ckpt):
    model, _ = load_module(lm_ckpt)
    template = PlainTemplate()
    conversations = [
        [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}],
        [
            {"role": "user", "content": "the grass is"},
            {"role": "assistant", "content": "green"},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "the sky is blue"},
        ],
    ]
    encoded = [encode_conversation(model.tokenizer, m, template) for m in conversations]
    by_hand = []
    with torch.no_grad():
        for ids, targets in encoded:
            logp = model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)  # (T - 1, V)
            scored = [t for t in range(1, len(ids)) if targets[t] != IGNORE]
            by_hand.append((-sum(logp[t - 1, targets[t]].item() for t in scored), len(scored)))
    # both in one right-padded batch: the shorter one's padding changes nothing
    got = response_losses(model, encoded, batch_size=2)
    assert [n for _, n in got] == [n for _, n in by_hand]
    assert by_hand[0][1] == len("blue" + template.end)  # the reply and its end text, per char
    for (nll, _), (expected, _) in zip(got, by_hand, strict=True):
        assert nll == pytest.approx(expected, rel=1e-5)
    ppl = math.exp(sum(nll for nll, _ in got) / sum(n for _, n in got))
    assert ppl == pytest.approx(math.exp(sum(e for e, _ in by_hand) / sum(n for _, n in by_hand)))


@pytest.mark.slow
def test_smollm2_as_installed_answers_pydoc_sft(tmp_path):
    proc = eval_cli(tmp_path, "ckpt_path=smollm2", "data=pydoc_sft", "sft.max_prompts=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["template"] == "chat" and metrics["scores"]["overall"]["n"] == 4
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["response"] and "<|im_end|>" not in s["response"] for s in samples)
    assert metrics["scores"]["overall"]["response_ppl"] < 1000  # a language model, not noise


def test_smollm2_needs_data(tmp_path):
    proc = eval_cli(tmp_path, "ckpt_path=smollm2", "sft.max_prompts=1")
    assert proc.returncode == 2 and "pass data=<a data config>" in proc.stderr.splitlines()[-1]


def test_a_task_sft_checkpoint_is_prompted_with_its_own_template(compose, tmp_path):
    data = write_conversations(tmp_path / "conversations")
    cfg = compose(
        "task=sft",
        "data=jsonl",
        f"data.root={data}",
        "tokenizer=char",
        "model.n_layers=1",
        "task.template.user='Q: {content}\n'",
        "task.template.assistant='A: '",
        "trainer.limit_train_batches=2",
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    result = evaluate(eval_config(compose, tmp_path, f"ckpt_path={ckpt}", "sft.max_new_tokens=4"))
    assert result["template"] == "PlainTemplate" and result["scores"]["overall"]["n"] == 3
    lines = (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    assert all(p.startswith("Q: ") and p.endswith("\nA: ") and "###" not in p for p in prompts)
