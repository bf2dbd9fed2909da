"""`run(cfg)` behind generate.py: sample text from a checkpoint, which alone gives model and
tokenizer. Streams a single sample to the terminal; writes every sample to samples.jsonl.
`chat=true` sends each prompt as a user message, rendered as the model was taught to read a
conversation (`encode_prompt`: its chat template, or the plain template a task=sft run was
trained with), and prints the reply alone; `interactive=true` holds a conversation on stdin,
its KV cache kept.
Every setting and the checkpoint itself are checked before Lightning loads (with the task class,
in `load_lm`), so a bad value is answered in about two seconds instead of eight."""

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from lm_lab.build import load_module
from lm_lab.cli.config import apply_extras, send_logs_to_hydra
from lm_lab.data.tokenization.chat import Message
from lm_lab.data.tokenization.conversation import PlainTemplate, encode_prompt
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.tasks.decoding import prepare_for_decoding
from lm_lab.tasks.metrics import LANGUAGE_MODELS
from lm_lab.tasks.sampling import Cache, check_sampling, generate_completions, is_count
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

if TYPE_CHECKING:  # a LightningModule: it loads with the checkpoint's task class (load_lm)
    from lm_lab.tasks.language_model import LanguageModel

log = get_logger(__name__)


def unescape(text: str) -> str:
    """A command line cannot easily hold a newline: `\\n` and `\\t` stand for newline and tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


STDIN = "-"  # prompt=- reads the prompt from stdin: text no shell quoting can mangle


def read_prompts(cfg: DictConfig) -> list[str]:
    """`prompt`, stdin for `prompt=-`, or one prompt per non-empty line of `prompt_file`; each
    `num_samples` times."""
    if cfg.prompt_file:
        prompts = file_prompts(Path(cfg.prompt_file))
    elif cfg.prompt == STDIN:
        prompts = [stdin_prompt()]
    elif cfg.prompt is None:
        raise ConfigError("prompt=null: give the text to continue, prompt=- (stdin) or prompt_file")
    else:
        prompts = [unescape(str(cfg.prompt))]
    if not is_count(cfg.num_samples) or cfg.num_samples < 1:
        raise ConfigError(f"num_samples={cfg.num_samples}: must be an integer >= 1")
    return [prompt for prompt in prompts for _ in range(cfg.num_samples)]


def file_prompts(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file."""
    if path.is_dir():
        raise ConfigError(
            f"prompt_file={path}: a directory, not a file; give a text file, one prompt a line"
        )
    if not path.is_file():
        raise ConfigError(f"prompt_file={path}: no such file; give a text file, one prompt a line")
    text = utf8(path.read_bytes(), f"prompt_file={path}", f"iconv -f latin1 -t utf-8 {path}")
    prompts = [line for line in text.splitlines() if line]
    if not prompts:
        raise ConfigError(f"prompt_file={path}: has no non-empty line")
    return prompts


def stdin_prompt() -> str:
    """All of stdin, verbatim (no `\\n` escapes: real newlines come through; note that `echo`
    ends the prompt with one)."""
    if sys.stdin.isatty():
        log.info("prompt=-: reading the prompt from stdin; end it with Ctrl-D")
    pipe = "... | iconv -f latin1 -t utf-8 | python generate.py ... prompt=-"
    text = utf8(sys.stdin.buffer.read(), "prompt=-: stdin", pipe)
    if not text:
        raise ConfigError(
            "prompt=-: nothing on stdin; pipe the prompt in, e.g. "
            "echo 'def fibonacci(n):' | python generate.py ckpt_path=<ckpt> prompt=-"
        )
    return text


def utf8(data: bytes, key: str, convert: str) -> str:
    """Prompts are UTF-8; anything else (Latin-1 from an old editor) is named, not a traceback."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{key}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
            f"convert it, e.g. {convert}"
        ) from None


TEMPERATURE, CHAT_TEMPERATURE = 0.8, 0.0  # what temperature=null means


def check_settings(cfg: DictConfig) -> None:
    """Every value generate.py reads, before the checkpoint is loaded (seconds on a big one).
    `temperature=null` is greedy for a chat, as transformers' `generate` is for a model whose
    generation_config.json does not say do_sample: a small chat model sampled at 0.8 rambles
    (SmolLM2-135M on the capital of France: "L'Étoile - la Chat - l'Arc de Triomphe...")."""
    if cfg.temperature is None:
        cfg.temperature = CHAT_TEMPERATURE if cfg.chat or cfg.interactive else TEMPERATURE
    check_sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    if not is_count(cfg.seed):
        raise ConfigError(f"seed={cfg.seed}: must be an integer")
    if not isinstance(cfg.onednn, bool):
        raise ConfigError(f"onednn={cfg.onednn}: must be true or false")


DTYPES = ("float32", "bfloat16", "float16")


def weight_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise ConfigError(f"dtype={name}: must be one of {', '.join(DTYPES)} or null")
    return getattr(torch, name)


def unknown_chars(tokenizer: Tokenizer, prompts: list[str]) -> list[int]:
    """Characters of each prompt the tokenizer never saw in training: they become UNK, which
    the model cannot read, so the log counts them (and samples.jsonl keeps the count)."""
    counts = [tokenizer.count_unknown(tokenizer.encode(prompt)) for prompt in prompts]
    distinct = dict(zip(prompts, counts, strict=True))  # each prompt once, not num_samples times
    if any(counts):
        log.warning(
            f"prompt: {sum(distinct.values())} character(s) unknown to the checkpoint's "
            f"tokenizer became UNK, in {sum(map(bool, distinct.values()))} of "
            f"{len(distinct)} prompt(s)"
        )
    return counts


DEVICE_TYPES = ("cpu", "cuda", "mps")


def pick_device(name: str) -> torch.device:
    """`auto`: a GPU when one is visible. A device the machine lacks is refused here, before
    the checkpoint loads, instead of failing in torch half-way."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"device={name}: not a device; use auto, cpu or cuda (cuda:<index>)")
    count = {
        "cpu": 1,
        "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "mps": int(torch.backends.mps.is_available()),
    }[device.type]
    if (device.index or 0) >= count:
        raise ConfigError(
            f"device={name}: {count} {device.type} device(s) visible on this machine; use "
            "device=auto (a GPU when there is one) or device=cpu"
        )
    return device


def load_lm(cfg: DictConfig, device: torch.device, dtype: torch.dtype | None) -> "LanguageModel":
    """The checkpoint's language model on `device`, its weights in `dtype` (None: as saved)."""
    module, _ = load_module(cfg.ckpt_path, dtype=dtype)  # Lightning loads with the task class
    if module.task_name not in LANGUAGE_MODELS:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: a {module.task_name} checkpoint cannot generate text; "
            "use one trained with task=generate or task=sft"
        )
    return prepare_for_decoding(module.to(device), cfg.onednn)  # a process that only generates


def chat_template(cfg: DictConfig, module: "LanguageModel") -> PlainTemplate | None:
    """How the model reads a conversation: None when its tokenizer's chat template renders it,
    else the plain template its task=sft run was trained with; a model with neither was never
    taught a conversation."""
    template = getattr(module, "template", None)
    if module.tokenizer.chat_template is None and template is None:
        key = "interactive=true" if cfg.interactive else "chat=true"
        raise ConfigError(
            f"{key}: ckpt_path={cfg.ckpt_path} has no chat template (chat_template in "
            "tokenizer_config.json, or chat_template.jinja); drop it to continue the prompt "
            "as plain text"
        )
    return template


def chat_stop(cfg: DictConfig, module: "LanguageModel") -> str | None:
    """The plain template's end of a reply when no EOS id ends it (None: the EOS ids do)."""
    template = chat_template(cfg, module)
    return None if template is None else template.stop(module.tokenizer)


def opening(cfg: DictConfig) -> list[Message]:
    """The conversation before the first user message: the `system` message, if given."""
    return [] if cfg.system is None else [{"role": "system", "content": unescape(str(cfg.system))}]


def sampling_options(cfg: DictConfig, stop: str | None = None) -> dict[str, Any]:
    """The keyword arguments of `generate_completions` from the config; `stop` (a chat's end
    of reply) applies when the config names none."""
    return {
        "stop": unescape(str(cfg.stop)) if cfg.stop else stop,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "seed": cfg.seed,
        "use_cache": cfg.use_cache,
    }


def write_samples(cfg: DictConfig, samples: list[dict[str, Any]]) -> Path:
    """`<run dir>/samples.jsonl`, one JSON object a line; returns the run dir."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples)
    return out_dir


def show(text: str) -> None:
    """Streams text to the terminal as it comes (no newline, flushed)."""
    print(text, end="", flush=True)


def chat_inputs(cfg: DictConfig, module: "LanguageModel", prompts: list[str]) -> list[list[int]]:
    """Each prompt as one user message (after the `system` one), as ids ending where the
    assistant's reply begins."""
    template, opened = chat_template(cfg, module), opening(cfg)
    turns = [[*opened, {"role": "user", "content": prompt}] for prompt in prompts]
    return [encode_prompt(module.tokenizer, turn, template) for turn in turns]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Generates for every prompt (or each line of a conversation, `interactive=true`); returns
    and writes {"samples", "tokens_per_s", ...}."""
    apply_extras(cfg)
    check_settings(cfg)
    device, dtype = pick_device(cfg.device), weight_dtype(cfg.get("dtype"))
    prompts = [] if cfg.interactive else read_prompts(cfg)
    module = load_lm(cfg, device, dtype)
    send_logs_to_hydra()  # Lightning's loggers, new since apply_extras (it came with the model)
    if cfg.interactive:
        return converse(cfg, module)
    inputs: list[Any] = chat_inputs(cfg, module, prompts) if cfg.chat else prompts
    unknown = unknown_chars(module.tokenizer, prompts)
    stream = cfg.stream and len(prompts) == 1
    if stream and not cfg.chat:
        show(prompts[0])
    started = time.perf_counter()
    completions = generate_completions(
        module,
        module.tokenizer,
        inputs,
        cfg.max_new_tokens,
        on_text=(lambda _, text: show(text)) if stream else None,
        **sampling_options(cfg, chat_stop(cfg, module) if cfg.chat else None),
    )
    seconds = time.perf_counter() - started
    samples = [
        {"prompt": p, "completion": c.text, "new_tokens": c.n_tokens, "unknown_chars": n}
        for p, c, n in zip(prompts, completions, unknown, strict=True)
    ]
    if stream:
        print()
    else:
        for i, sample in enumerate(samples):
            shown = "" if cfg.chat else sample["prompt"]  # a chat prints the reply alone
            print(f"--- sample {i}\n{shown}{sample['completion']}")
    return summary(cfg, samples, seconds)


def summary(cfg: DictConfig, samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Writes samples.jsonl, prints the count and returns what `run` returns."""
    out_dir = write_samples(cfg, samples)
    n_tokens = sum(s["new_tokens"] for s in samples)  # generated ids, not the text re-encoded
    print(f"{n_tokens} tokens in {seconds:.2f} s; samples in {out_dir}/samples.jsonl")
    return {
        "samples": samples,
        "new_tokens": n_tokens,
        "tokens_per_s": n_tokens / seconds if seconds else 0.0,
        "run_dir": str(out_dir),
    }


def user_lines() -> Iterator[str]:
    """The user's messages, one a line of stdin, until end of input or `/bye` (ollama's word);
    blank lines are skipped. A terminal gets a `> ` prompt."""
    tty = sys.stdin.isatty()
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            return
        if line.strip() == "/bye":
            return
        if line.strip():
            yield line


def converse(cfg: DictConfig, module: "LanguageModel") -> dict[str, Any]:
    """A conversation on the terminal: each line is a user message, each reply streams back.
    The cache keeps the model's state across turns, so a turn reads only the ids it adds
    (the rendered reply and the next message), not the whole conversation again."""
    tokenizer = module.tokenizer
    template, messages = chat_template(cfg, module), opening(cfg)
    options = sampling_options(cfg, chat_stop(cfg, module))
    cache, samples, seconds = Cache(), [], 0.0
    for line in user_lines():
        messages.append({"role": "user", "content": line})
        ids = encode_prompt(tokenizer, messages, template)
        started = time.perf_counter()
        [reply] = generate_completions(
            module, tokenizer, [ids], cfg.max_new_tokens, on_text=lambda _, t: show(t),
            cache=cache, **options,
        )  # fmt: skip
        seconds += time.perf_counter() - started
        print()
        messages.append({"role": "assistant", "content": reply.text})
        samples.append({"prompt": line, "completion": reply.text, "new_tokens": reply.n_tokens})
    return summary(cfg, samples, seconds)
