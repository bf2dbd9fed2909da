"""generate.run: a checkpoint alone gives the model and the tokenizer that decodes its samples."""

import io
import json
from pathlib import Path

import pytest

from lm_lab.cli.entry import cli
from lm_lab.data.tokenization.tokenizers import CharTokenizer
from lm_lab.generate import check_settings, unescape
from lm_lab.generate import run as generate
from lm_lab.train import run as train
from lm_lab.utils.errors import ConfigError


def trained_lm(compose, root: Path, tokenizer: str, batches: int) -> Path:
    """The last checkpoint of a few training batches of an LM on a line of Hamlet."""
    (root / "train.txt").write_text("to be or not to be, that is the question\n" * 40)
    (root / "validation.txt").write_text("whether tis nobler in the mind to suffer\n" * 10)
    cfg = compose(
        "task=generate", "data=text", f"data.root={root}", f"tokenizer={tokenizer}",
        f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=1", "test=false",
    )  # fmt: skip
    train(cfg)
    (Path(cfg.paths.output_dir) / "tokenizer.json").unlink()  # only the checkpoint has it now
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture
def checkpoint(compose, tmp_path) -> Path:
    return trained_lm(compose, tmp_path, "char", batches=2)


def test_samples_from_a_checkpoint_decode_with_its_tokenizer(checkpoint, compose, tmp_path):
    (tmp_path / "prompts.txt").write_text("to be\nthe\n")
    cfg = compose(
        f"ckpt_path={checkpoint}", f"prompt_file={tmp_path / 'prompts.txt'}", "num_samples=2",
        "max_new_tokens=20", "top_k=5", config_name="generate",
    )  # fmt: skip
    cfg.paths.output_dir = str(tmp_path / "sample")
    samples = generate(cfg)["samples"]
    assert [s["prompt"] for s in samples] == ["to be", "to be", "the", "the"]
    alphabet = set("to be or not to be, that is the question\n") | {CharTokenizer.UNK_TEXT}
    for sample in samples:
        assert len(sample["completion"]) == 20 and set(sample["completion"]) <= alphabet
    written = (tmp_path / "sample" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == samples


def test_prompt_characters_unseen_in_training_are_counted(checkpoint, compose, tmp_path, caplog):
    (tmp_path / "prompts.txt").write_text("to bé zz\nthe\n")  # é, z, z: never in training
    cfg = compose(
        f"ckpt_path={checkpoint}", f"prompt_file={tmp_path / 'prompts.txt'}", "num_samples=2",
        "max_new_tokens=3", config_name="generate",
    )  # fmt: skip
    cfg.paths.output_dir = str(tmp_path / "sample")
    samples = generate(cfg)["samples"]
    assert [s["unknown_chars"] for s in samples] == [3, 3, 0, 0]
    assert "prompt: 3 character(s) unknown to the checkpoint's tokenizer became UNK, in 1 of 2" in (
        caplog.text
    )


def test_a_classifier_checkpoint_cannot_generate(compose, tmp_path):
    for split, words in (("train", "film"), ("validation", "plot")):
        rows = f"good {words},pos\nbad {words},neg\n" * 8
        (tmp_path / f"{split}.csv").write_text("text,label\n" + rows)
    cfg = compose(
        "task=classify", "data=csv", f"data.root={tmp_path}", "tokenizer=char",
        "trainer.limit_train_batches=2", "test=false",
    )  # fmt: skip
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    gcfg = compose(f"ckpt_path={ckpt}", config_name="generate")
    gcfg.paths.output_dir = str(tmp_path / "sample")
    with pytest.raises(ConfigError, match="cannot generate"):
        generate(gcfg)


def test_command_line_escapes_become_newlines_and_tabs():
    assert unescape(r"ROMEO:\n\tO") == "ROMEO:\n\tO" and unescape("plain") == "plain"


@pytest.fixture
def byte_checkpoint(compose, tmp_path) -> Path:
    """A barely trained byte-level LM: its samples are mostly bytes that are not UTF-8."""
    return trained_lm(compose, tmp_path, "byte", batches=1)


def test_the_token_count_is_the_ids_generated(byte_checkpoint, compose, tmp_path, capsys):
    """`max_new_tokens=50` printed "80 tokens": the count re-encoded the decoded text."""
    cfg = compose(
        f"ckpt_path={byte_checkpoint}", "prompt=to be", "num_samples=2", "max_new_tokens=50",
        "temperature=1.0", config_name="generate",
    )  # fmt: skip
    cfg.paths.output_dir = str(tmp_path / "sample")
    result = generate(cfg)
    assert result["new_tokens"] == 100 and [s["new_tokens"] for s in result["samples"]] == [50, 50]
    assert "\n100 tokens in " in capsys.readouterr().out
    assert result["tokens_per_s"] > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("temperature=nan", "temperature=nan: must be a finite number >= 0 (0 = greedy)"),
        ("temperature=inf", "temperature=inf: must be a finite number >= 0 (0 = greedy)"),
        ("temperature=hot", "temperature=hot: must be a finite number >= 0 (0 = greedy)"),
        ("top_p=1.5", "top_p=1.5: must be in (0, 1]"),
        ("seed=abc", "seed=abc: must be an integer"),
        ("onednn=yes", "onednn=yes: must be true or false"),
        ("num_samples=true", "num_samples=True: must be an integer >= 1"),
        ("num_samples=0", "num_samples=0: must be an integer >= 1"),
        ("device=gpu0", "device=gpu0: not a device; use auto, cpu or cuda (cuda:<index>)"),
        ("device=cpu:1", "device=cpu:1: 1 cpu device(s) visible on this machine"),
        ("prompt=null", "prompt=null: give the text to continue"),
    ],
)
def test_bad_values_are_refused_before_the_checkpoint_loads(compose, tmp_path, override, message):
    """ckpt_path does not exist: every value is checked before it would be read."""
    cfg = compose(f"ckpt_path={tmp_path / 'missing.ckpt'}", override, config_name="generate")
    with pytest.raises(ConfigError) as caught:
        generate(cfg)
    assert str(caught.value).startswith(message)


def test_cuda_on_a_machine_without_it_is_refused(compose, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = compose(f"ckpt_path={tmp_path / 'missing.ckpt'}", "device=cuda", config_name="generate")
    with pytest.raises(ConfigError, match=r"^device=cuda: 0 cuda device\(s\) visible on this"):
        generate(cfg)


def test_prompt_file_a_directory_or_not_utf8_says_so(compose, tmp_path):
    latin1 = tmp_path / "prompts.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    cases = {
        tmp_path: f"prompt_file={tmp_path}: a directory, not a file",
        latin1: f"prompt_file={latin1}: not UTF-8 text (byte 0xe9 at offset 3); convert it",
        tmp_path / "nope.txt": f"prompt_file={tmp_path / 'nope.txt'}: no such file",
    }
    for path, message in cases.items():
        cfg = compose("ckpt_path=x.ckpt", f"prompt_file={path}", config_name="generate")
        with pytest.raises(ConfigError) as caught:
            generate(cfg)
        assert str(caught.value).startswith(message)


def test_prompt_dash_refuses_stdin_that_is_not_utf8(compose, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO("café\n".encode("latin-1")))
    monkeypatch.setattr("sys.stdin", stdin)
    cfg = compose("ckpt_path=x.ckpt", "prompt=-", config_name="generate")
    with pytest.raises(ConfigError) as caught:
        generate(cfg)
    assert str(caught.value).startswith(
        "prompt=-: stdin: not UTF-8 text (byte 0xe9 at offset 3); convert it, e.g. ... | iconv"
    )


@pytest.mark.parametrize(
    ("override", "quoted"),
    [
        ("prompt=def fibonacci(n):", """'prompt="def fibonacci(n):"'"""),  # `(` is grammar
        ("prompt=Hello, world", """'prompt="Hello, world"'"""),  # a comma: a list or a sweep
        ('prompt=say "hi" (now)', """'prompt="say \\"hi\\" (now)"'"""),  # `"` escaped
    ],
)
def test_a_prompt_hydra_cannot_read_says_how_to_quote_it(
    compose, capsys, monkeypatch, override, quoted
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as stopped:
        cli(lambda: compose("ckpt_path=x.ckpt", override, config_name="generate"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"error: cannot parse the override {override!r}: quote the value for Hydra inside the "
        f"shell's quotes, e.g. {quoted} (non-ASCII and special characters), or pass prompt=- "
        "and pipe the text on stdin\n"
    )


@pytest.mark.parametrize(
    ("overrides", "temperature"),
    [
        ((), 0.8),
        (("chat=true",), 0.0),
        (("interactive=true",), 0.0),
        (("chat=true", "temperature=0.5"), 0.5),
    ],
)
def test_temperature_null_is_greedy_for_a_chat_and_0_8_otherwise(compose, overrides, temperature):
    """A small chat model sampled at 0.8 rambled instead of answering (SmolLM2: no Paris)."""
    cfg = compose("ckpt_path=x", *overrides, config_name="generate")
    check_settings(cfg)
    assert cfg.temperature == temperature
