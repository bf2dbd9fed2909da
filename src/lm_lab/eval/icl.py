"""Zero- and few-shot classification by in-context learning: no weight changes, only a prompt.

A prompt is an instruction, k demonstrations drawn from the training split and the query, all
rendered with the data set's template and joined by a separator. Each label is scored by the
LM's log-likelihood of its verbalizer as the continuation of the prompt; `acc` picks the label
with the highest summed log-prob, `acc_norm` the highest log-prob per character (which does not
favour short verbalizers). Demonstrations that would push a prompt past the model's context are
dropped, oldest first, and counted.
"""

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from lm_lab.data.classification import label_names_of
from lm_lab.data.split import Split
from lm_lab.data.tokenizers import Tokenizer
from lm_lab.eval.curves import save_curve
from lm_lab.tasks.base import TaskModule
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger
from lm_lab.utils.markdown import markdown_table

log = get_logger(__name__)

Example = tuple[str, str]  # (text, label name)
LogitsFn = Callable[[Tensor], Tensor]  # input ids (B, T) -> next-token logits (B, T, V)


@dataclass
class PromptTemplate:
    """How one example reads: `demo` holds `{text}` and ends with `{label}`; `verbalizers` maps
    each label name to the word that stands for it (None: the label names themselves). The
    defaults are the generic template (conf/icl_template/generic.yaml), for any labelled data."""

    demo: str = "Text: {text}\nLabel: {label}"
    instruction: str = ""
    separator: str = "\n\n"
    verbalizers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if "{text}" not in self.demo or not self.demo.endswith("{label}"):
            raise ConfigError(
                f"icl.template.demo={self.demo!r}: must contain {{text}} and end with {{label}}"
            )
        head = self.demo[: -len("{label}")]
        self._query = head.rstrip()  # trailing space goes with the verbalizer: " positive"
        self._gap = head[len(self._query) :]

    def word(self, label: str) -> str:
        return self.verbalizers[label] if self.verbalizers else label

    def render(self, text: str, label: str) -> str:
        return self._query.format(text=text) + self.continuation(label)

    def query(self, text: str) -> str:
        return self._query.format(text=text)

    def continuation(self, label: str) -> str:
        return self._gap + self.word(label)


def label_groups(pool: Sequence[Example], balanced: bool) -> list[list[int]]:
    """Indices of `pool` per label when balanced, else one group of all; built once per cell."""
    groups: dict[str | None, list[int]] = {}
    for i, (_, label) in enumerate(pool):
        groups.setdefault(label if balanced else None, []).append(i)
    return list(groups.values())


def sample_demos(
    pool: Sequence[Example],
    groups: list[list[int]],
    k: int,
    rng: random.Random,
    query_text: str,
) -> list[Example]:
    """k examples of `pool`, never one whose text is the query's; the slots cycle through the
    groups (labels, when balanced) in a random order, so each gets k / n_groups of them."""
    if k == 0:
        return []
    order = rng.sample(groups, len(groups))
    chosen: list[int] = []
    for slot in range(k):
        group = order[slot % len(order)]
        for _ in range(100):  # rejection: repeats and the query itself are rare in a large pool
            i = group[rng.randrange(len(group))]
            if i not in chosen and pool[i][0] != query_text:
                chosen.append(i)
                break
    rng.shuffle(chosen)
    return [pool[i] for i in chosen]


def build_prompt(
    template: PromptTemplate,
    tokenizer: Tokenizer,
    demos: list[Example],
    query_text: str,
    budget: int,
) -> tuple[list[int], int]:
    """Prompt ids and the number of demos dropped (oldest first) to fit `budget` tokens; a
    query that alone exceeds the budget keeps its last tokens. A pretrained model's BOS (if it
    wants one) leads."""
    bos = tokenizer.bos_ids
    budget -= len(bos)
    sep = tokenizer.encode(template.separator)
    head = [tokenizer.encode(template.instruction)] if template.instruction else []
    shown = [tokenizer.encode(template.render(text, label)) for text, label in demos]
    query = tokenizer.encode(template.query(query_text))
    dropped = 0
    while True:
        pieces = head + shown[dropped:] + [query]
        ids = [t for piece in pieces for t in (*piece, *sep)][: -len(sep) or None]
        if len(ids) <= budget or dropped == len(shown):
            return bos + ids[-budget:], dropped
        dropped += 1


@torch.no_grad()
def continuation_logprobs(
    logits_fn: LogitsFn,
    prompts: list[list[int]],
    continuations: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
) -> Tensor:
    """Summed log-prob of each continuation after its prompt: (N,). Sequences are right-padded,
    which a causal model never sees from the positions that are scored."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        batch = slice(start, start + batch_size)
        pairs = list(zip(prompts[batch], continuations[batch], strict=True))
        T = max(len(p) + len(c) for p, c in pairs) - 1
        ids = torch.full((len(pairs), T + 1), pad_id, dtype=torch.long)  # (B, T + 1)
        mask = torch.zeros(len(pairs), T, dtype=torch.bool)  # (B, T): scored targets
        for r, (prompt, cont) in enumerate(pairs):
            ids[r, : len(prompt) + len(cont)] = torch.tensor(prompt + cont)
            mask[r, len(prompt) - 1 : len(prompt) + len(cont) - 1] = True
        logp = F.log_softmax(logits_fn(ids[:, :-1]).float(), dim=-1)  # (B, T, V)
        token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T)
        scores.append((token_logp * mask).sum(1))
    return torch.cat(scores)


def label_scores(
    logits_fn: LogitsFn,
    tokenizer: Tokenizer,
    template: PromptTemplate,
    labels: list[str],
    prompts: list[list[int]],
    batch_size: int = 32,
) -> Tensor:
    """Summed log-prob of each label's verbalizer after each prompt: (N, L)."""
    conts = [tokenizer.encode(template.continuation(label)) for label in labels]
    flat_prompts = [p for p in prompts for _ in labels]
    return continuation_logprobs(
        logits_fn, flat_prompts, conts * len(prompts), tokenizer.pad_id, batch_size
    ).view(len(prompts), len(labels))  # (N, L)


def predictions(
    scores: Tensor, template: PromptTemplate, labels: list[str]
) -> tuple[list[str], list[str]]:
    """(N, L) scores -> labels by summed log-prob and by log-prob per character."""
    chars = torch.tensor([len(template.continuation(label)) for label in labels])  # (L,)
    by_sum = [labels[i] for i in scores.argmax(1).tolist()]
    by_char = [labels[i] for i in (scores / chars).argmax(1).tolist()]
    return by_sum, by_char


def calibrated(scores: Tensor, content_free: Tensor) -> Tensor:
    """Contextual calibration (Zhao et al., 2021): divide each prompt's label distribution by
    the one the same demos give a content-free query, so a label the prompt favours whatever
    the input stops winning by default. Label indices (N,), from (N, L) scores each."""
    return (scores.log_softmax(-1) - content_free.log_softmax(-1)).argmax(-1)


def evaluate_shots(
    logits_fn: LogitsFn,
    tokenizer: Tokenizer,
    template: PromptTemplate,
    pool: list[Example],
    queries: list[Example],
    k: int,
    seed: int,
    balanced: bool,
    budget: int,
    batch_size: int = 32,
    content_free: str | None = None,
) -> dict[str, float]:
    """acc, acc_norm and dropped demos of one (k, seed) cell; with `content_free` (e.g. "N/A")
    also acc_calib, each prompt calibrated by that text under the same demos."""
    labels = sorted({label for _, label in pool})
    rng, groups = random.Random(seed), label_groups(pool, balanced)
    prompts, neutral, dropped = [], [], 0
    for text, _ in queries:
        demos = sample_demos(pool, groups, k, rng, text)
        ids, n = build_prompt(template, tokenizer, demos, text, budget)
        prompts.append(ids)
        dropped += n
        if content_free is not None:
            neutral.append(build_prompt(template, tokenizer, demos, content_free, budget)[0])
    scores = label_scores(logits_fn, tokenizer, template, labels, prompts, batch_size)
    by_sum, by_char = predictions(scores, template, labels)
    gold = [label for _, label in queries]
    cell = {"acc": _accuracy(by_sum, gold), "acc_norm": _accuracy(by_char, gold)}
    if content_free is not None:
        prior = label_scores(logits_fn, tokenizer, template, labels, neutral, batch_size)
        cell["acc_calib"] = _accuracy([labels[i] for i in calibrated(scores, prior)], gold)
    return cell | {"demos_dropped": dropped}


def _accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def summarise(k: int, cells: list[dict[str, float]], n_queries: int) -> dict[str, Any]:
    """Mean and std over seeds of one k."""
    row: dict[str, Any] = {"k": k, "seeds": len(cells), "queries": n_queries}
    for key in [key for key in ("acc", "acc_norm", "acc_calib") if key in cells[0]]:
        values = [c[key] for c in cells]
        row[f"{key}_mean"] = statistics.fmean(values)
        row[f"{key}_std"] = statistics.pstdev(values)
    row["demos_dropped"] = sum(c["demos_dropped"] for c in cells)
    return row


# ---- the eval.py mode --------------------------------------------------------------------------


def labelled(split: Split) -> list[Example]:
    return [
        (t, lab) for t, lab in zip(split.texts, split.labels or [], strict=False) if lab is not None
    ]


def template_for(labels: set[str], template: PromptTemplate) -> PromptTemplate:
    """The chosen template when its verbalizers cover the data's labels; the generic template
    (label names as verbalizers) when they name none of them, i.e. it was written for other
    data: the user's own CSV with labels ham/spam still gets a zero/few-shot table."""
    words = set(template.verbalizers or labels)
    if labels <= words:
        return template
    if labels & words:
        raise ConfigError(
            f"icl.template.verbalizers: no word for labels {sorted(labels - words)}; add them "
            "(icl.template.verbalizers.<label>=<word>) or use icl_template=generic"
        )
    generic = PromptTemplate()
    log.info(
        f"icl: the template has no words for labels {sorted(labels)}: using the generic "
        f"template {generic.demo!r} with the label names as verbalizers (icl_template=...)"
    )
    return generic


def context_budget(module: TaskModule, saved: DictConfig, context: int | None) -> int:
    """Tokens a prompt may use: icl.context, else a learned-position model's max_len, else the
    block size the LM was trained on (longer prompts leave the positions it has seen)."""
    if context is not None:
        return context
    max_len = getattr(module.backbone.encoder, "max_len", None)
    return max_len or int(saved.data.block_size)


def run(module: TaskModule, saved: DictConfig, data: DictConfig, cfg: DictConfig) -> dict:
    """`python eval.py mode=icl ...`: a k-shot table over seeds, as JSON, markdown and PNG."""
    icl = cfg.icl
    if module.task_name != "generate":
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: mode=icl needs a language model checkpoint")
    splits = instantiate(data.source).load()
    pool, queries = labelled(splits["train"]), labelled(splits.get(cfg.split, splits["validation"]))
    if not pool or not queries:
        raise ConfigError(f"data={data.source._target_}: mode=icl needs labelled data (sst2...)")
    labels = label_names_of(splits["train"])
    if len(labels) < 2:  # one label to choose from scores 1.000 at every k: a table of nothing
        origin = splits["train"].origin or data.source._target_
        raise ConfigError(
            f"{origin}: mode=icl needs at least 2 labels in the training split (as "
            f"task=classify does), found {labels}; check data.source.label_column"
        )
    chosen = PromptTemplate(**OmegaConf.to_container(icl.template))
    template = template_for(set(labels), chosen)
    random.Random(icl.query_seed).shuffle(queries)
    queries = queries[: icl.max_queries]
    budget = context_budget(module, saved, icl.context)
    budget -= max(len(module.tokenizer.encode(template.continuation(lab))) for _, lab in pool)
    logits_fn = module.eval()
    rows = []
    for k in icl.shots:
        cells = [
            evaluate_shots(
                logits_fn,
                module.tokenizer,
                template,
                pool,
                queries,
                k,
                s,
                icl.balanced,
                budget,
                content_free=icl.content_free if icl.calibrate else None,
            )
            for s in range(icl.seeds)
        ]
        rows.append(summarise(k, cells, len(queries)))
        log.info(f"icl k={k}: " + ", ".join(f"{key}={v}" for key, v in rows[-1].items()))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    (out_dir / "icl.md").write_text(table + "\n")
    curves = ("acc", "acc_norm", "acc_calib") if icl.calibrate else ("acc", "acc_norm")
    save_curve(out_dir / "icl_kshot.png", rows, "k", curves, "demonstrations k")
    log.info(table)
    if any(r["demos_dropped"] for r in rows):
        log.info(f"demos that did not fit in {budget} prompt tokens were dropped (counted)")
    return {
        "mode": "icl",
        "rows": rows,
        "context_tokens": budget,
        "template": asdict(template),
        "ckpt_path": str(cfg.ckpt_path),
    }
