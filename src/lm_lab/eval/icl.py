"""Zero- and few-shot classification by in-context learning: no weight changes, only a prompt.

A prompt is an instruction, k demonstrations drawn from the training split and the query, all
rendered with the data set's template and joined by a separator. Each label is scored by the
LM's log-likelihood of its verbalizer as the continuation of the prompt; `acc` picks the label
with the highest summed log-prob, `acc_norm` the highest log-prob per character (which does not
favour short verbalizers). A prompt's ids are its whole text tokenized at once, what the model
would read anywhere else (`split_prompts`). A prompt that does not fit the model's context is
refused, never cut: a cut prompt would score a different k than its table row says.
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

from lm_lab.data.loaders.classification import label_names_of
from lm_lab.data.sources.split import Split
from lm_lab.data.tokenization.chat import render
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.eval.curves import save_curve
from lm_lab.tasks.base import TaskModule
from lm_lab.tasks.language_model import LanguageModel
from lm_lab.tasks.metrics import LANGUAGE_MODELS
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger
from lm_lab.utils.markdown import markdown_table

log = get_logger(__name__)

Example = tuple[str, str]  # (text, label name)
LogitsFn = Callable[[Tensor, Tensor], Tensor]  # ids (B, T), at (N, 2) [row, pos] -> logits (N, V)
RowLogits = Callable[[Tensor, Tensor], Tensor]  # the same, for ids (B, t) after a shared prefix


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
    exclude: set[str],
) -> list[Example]:
    """k examples of `pool`, none whose text is in `exclude` (the queries: a query must not be
    answered by its own demonstration); the slots cycle through the groups (labels, when
    balanced) in a random order, so each gets k / n_groups of them."""
    if k == 0:
        return []
    order = rng.sample(groups, len(groups))
    chosen: list[int] = []
    for slot in range(k):
        group = order[slot % len(order)]
        for _ in range(100):  # rejection: repeats and query texts are rare in a large pool
            i = group[rng.randrange(len(group))]
            if i not in chosen and pool[i][0] not in exclude:
                chosen.append(i)
                break
    rng.shuffle(chosen)
    return [pool[i] for i in chosen]


@dataclass
class Prompts:
    """One (k, seed) cell's prompts as ids: `prefix`, the instruction and the demonstrations
    every query shares, then each query's own ids (prefix + query is the whole prompt)."""

    prefix: list[int]
    queries: list[list[int]]


def common_length(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share."""
    if b[: len(a)] == a:  # the usual case, compared at C speed
        return len(a)
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(b))


def split_prompts(tokenizer: Tokenizer, bos: list[int], head: str, wholes: list[str]) -> Prompts:
    """Each whole prompt (`head` + the query's text) tokenized whole, as the model reads that
    string anywhere else (GPT-2's pre-tokenizer splits the "\\n\\n" before a word into two
    tokens; encoding the separator alone gives one, a pair the model never saw in training).
    The shared prefix is `head`'s ids as far as every whole prompt begins with them, and ends
    before any query's last id: what lets every query continue one cached prefix and still
    score exactly its whole prompt."""
    prefix = bos + tokenizer.encode(head)
    ids = [bos + row for row in tokenizer.encode_batch(wholes)]
    n = min([len(prefix)] + [min(common_length(prefix, row), len(row) - 1) for row in ids])
    return Prompts(prefix[:n], [row[n:] for row in ids])


class Prompter:
    """Demonstrations and queries as ids. Plain: the template's text, pieces joined by its
    separator, a pretrained model's BOS first. Chat (`chat_template` given): the instruction as
    the system message, each demonstration a user turn answered by its verbalizer, the query the
    last user turn, rendered as the model was instruction-tuned to read a conversation (the ids
    `apply_chat_template(..., add_generation_prompt=True, tokenize=True)` gives; the template
    writes any BOS itself). Either way a prompt's ids are its whole text tokenized at once
    (`split_prompts`)."""

    def __init__(
        self,
        template: PromptTemplate,
        tokenizer: Tokenizer,
        chat_template: str | None = None,
        instruction: str = "",
    ) -> None:
        self.template, self.tokenizer, self.chat_template = template, tokenizer, chat_template
        self.instruction = instruction or template.instruction

    def continuation(self, label: str) -> str:
        """What is scored after a prompt: " positive" in plain text, "positive" as a reply."""
        if self.chat_template is None:
            return self.template.continuation(label)
        return self.template.word(label)

    def prompts(self, demos: list[Example], texts: list[str]) -> Prompts:
        if self.chat_template is not None:
            return self._chat(demos, texts)
        template = self.template
        pieces = [self.instruction] if self.instruction else []
        pieces += [template.render(text, label) for text, label in demos]
        head = "".join(piece + template.separator for piece in pieces)
        wholes = [head + template.query(text) for text in texts]
        return split_prompts(self.tokenizer, self.tokenizer.bos_ids, head, wholes)

    def _chat(self, demos: list[Example], texts: list[str]) -> Prompts:
        template, specials = self.template, self.tokenizer.special_tokens
        turns = [{"role": "system", "content": self.instruction}] if self.instruction else []
        for text, label in demos:
            turns += [
                {"role": "user", "content": template.query(text)},
                {"role": "assistant", "content": template.word(label)},
            ]
        head = render(self.chat_template, turns, specials, False) if turns else ""
        wholes = [
            render(
                self.chat_template,
                [*turns, {"role": "user", "content": template.query(text)}],
                specials,
            )
            for text in texts
        ]
        return split_prompts(self.tokenizer, [], head, wholes)


def whole_prompt(logits_fn: LogitsFn, prefix: list[int]) -> RowLogits:
    """Rows scored by running prefix + row in full each time: the reference the cache must
    equal, and the way for an encoder without incremental encoding (model=cnn)."""
    head = torch.tensor(prefix, dtype=torch.long)  # (P,)
    shift = torch.tensor([0, len(prefix)])  # row positions -> whole-prompt positions

    def run(rows: Tensor, at: Tensor) -> Tensor:
        ids = torch.cat([head.expand(len(rows), -1), rows], 1)  # (B, P + t)
        return logits_fn(ids, at + shift)  # (N, V)

    return run


def prefix_cached(model: LanguageModel, prefix: list[int]) -> RowLogits:
    """The prefix is encoded once (one row); every batch of rows continues from its state, so
    k demonstrations cost once per cell instead of once per query and label."""
    if not prefix:
        return whole_prompt(lm_logits(model), prefix)
    device = model.backbone.embed.weight.device
    # the prefix's state only: no label is scored in it, so its logits are never projected
    _, state = model.backbone.step(torch.tensor([prefix], device=device), None, 0)
    encoder = model.backbone.encoder

    def run(rows: Tensor, at: Tensor) -> Tensor:
        batch_state = encoder.repeat_state(state, len(rows))
        h, _ = model.backbone.step(rows.to(device), batch_state, len(prefix))  # (B, t, D)
        return model.head(h[at[:, 0], at[:, 1]])  # (N, V)

    return run


def lm_logits(model: LanguageModel) -> LogitsFn:
    """A language model's logits at the scored positions only: projecting every position onto
    a 49 K vocabulary costs a fifth of SmolLM2's forward pass and most of its memory."""
    device = model.backbone.embed.weight.device

    def run(ids: Tensor, at: Tensor) -> Tensor:
        h = model.backbone(ids.to(device), causal=True)  # (B, T, D)
        return model.head(h[at[:, 0], at[:, 1]])  # (N, V)

    return run


@torch.no_grad()
def label_logprobs(
    row_logits: RowLogits,
    queries: list[list[int]],
    conts: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
) -> Tensor:
    """Summed log-prob of each continuation after each query (and the shared prefix): (N, L).

    A row is a query plus all but the last token of one continuation; labels whose
    continuations agree up to their last token share a row (single-token verbalizers: one row
    per query, the label tokens all read at the query's last position). Rows are sorted by
    length and right-padded, which a causal model never sees from the positions scored; only
    the distinct (row, position) pairs scored are projected onto the vocabulary."""
    rows: dict[tuple[int, ...], int] = {}
    targets = []  # (pair = query * L + label, row, position in the row, token)
    for i, query in enumerate(queries):
        for j, cont in enumerate(conts):
            row = rows.setdefault((*query, *cont[:-1]), len(rows))
            targets += [
                (i * len(conts) + j, row, len(query) - 1 + n, t) for n, t in enumerate(cont)
            ]
    unique = list(rows)
    order = sorted(range(len(unique)), key=lambda r: len(unique[r]))
    rank = torch.empty(len(unique), dtype=torch.long)
    rank[order] = torch.arange(len(unique))  # row -> its place in the sorted order
    pair, row, pos, token = torch.tensor(targets, dtype=torch.long).reshape(-1, 4).T
    row = rank[row]
    scores = torch.zeros(len(queries) * len(conts))  # (N * L,)
    for start in range(0, len(unique), batch_size):
        batch = [unique[r] for r in order[start : start + batch_size]]
        ids = torch.full((len(batch), len(batch[-1])), pad_id, dtype=torch.long)  # (B, t)
        for r, seq in enumerate(batch):
            ids[r, : len(seq)] = torch.tensor(seq)
        here = (row >= start) & (row < start + len(batch))
        at, slot = torch.stack([row[here] - start, pos[here]], 1).unique(dim=0, return_inverse=True)
        logp = F.log_softmax(row_logits(ids, at).float(), dim=-1).cpu()  # (U, V)
        scores.index_add_(0, pair[here], logp[slot, token[here]])
    return scores.view(len(queries), len(conts))  # (N, L)


def predictions(scores: Tensor, chars: list[int], labels: list[str]) -> tuple[list[str], list[str]]:
    """(N, L) scores -> labels by summed log-prob and by log-prob per character of each
    label's continuation (`chars`)."""
    per_char = scores / torch.tensor(chars)  # (N, L)
    by_sum = [labels[i] for i in scores.argmax(1).tolist()]
    by_char = [labels[i] for i in per_char.argmax(1).tolist()]
    return by_sum, by_char


def calibrated(scores: Tensor, content_free: Tensor) -> Tensor:
    """Contextual calibration (Zhao et al., 2021): divide each prompt's label distribution by
    the one the same demos give a content-free query, so a label the prompt favours whatever
    the input stops winning by default. Label indices (N,), from (N, L) and (L,) scores."""
    return (scores.log_softmax(-1) - content_free.log_softmax(-1)).argmax(-1)


Scorer = Callable[[list[int]], RowLogits]  # a cell's prefix -> how its rows get their logits


def check_fits(prompts: Prompts, conts: list[list[int]], k: int, budget: int) -> None:
    """Every query must be read whole after all k demonstrations: a prompt cut to fit would
    score a different k than the table's row says."""
    longest = max(map(len, prompts.queries)) + max(map(len, conts))
    if len(prompts.prefix) + longest <= budget:
        return
    if k == 0:
        raise ConfigError(
            f"icl.shots: the longest query with its label takes {longest} tokens, more than the "
            f"{budget}-token context (icl.context, else the model's max_len or trained "
            "block_size): this model cannot read these texts whole"
        )
    raise ConfigError(
        f"icl.shots: k={k} demonstrations take {len(prompts.prefix)} tokens and the longest "
        f"query with its label {longest}, more than the {budget}-token context (icl.context, "
        "else the model's max_len or trained block_size); use fewer shots, or a larger "
        "icl.context if the model reads that far"
    )


def evaluate_shots(
    scorer: Scorer,
    prompter: Prompter,
    pool: list[Example],
    queries: list[Example],
    k: int,
    seed: int,
    balanced: bool,
    budget: int,
    batch_size: int = 32,
    content_free: str | None = None,
) -> dict[str, float]:
    """acc and acc_norm of one (k, seed) cell: one draw of k demonstrations shared by every
    query (encoded once); with `content_free` (e.g. "N/A") also acc_calib, every query
    calibrated by that text under the same demos."""
    labels = sorted({label for _, label in pool})
    tokenizer = prompter.tokenizer
    conts = [tokenizer.encode(prompter.continuation(label)) for label in labels]
    texts = [text for text, _ in queries]
    demos = sample_demos(pool, label_groups(pool, balanced), k, random.Random(seed), set(texts))
    extra = [] if content_free is None else [content_free]
    prompts = prompter.prompts(demos, texts + extra)
    check_fits(prompts, conts, k, budget)
    scores = label_logprobs(
        scorer(prompts.prefix), prompts.queries, conts, tokenizer.pad_id, batch_size
    )
    chars = [len(prompter.continuation(label)) for label in labels]
    by_sum, by_char = predictions(scores[: len(texts)], chars, labels)
    gold = [label for _, label in queries]
    cell = {"acc": _accuracy(by_sum, gold), "acc_norm": _accuracy(by_char, gold)}
    if content_free is not None:
        calib = calibrated(scores[: len(texts)], scores[len(texts)])
        cell["acc_calib"] = _accuracy([labels[i] for i in calib.tolist()], gold)
    return cell | {"prefix_tokens": len(prompts.prefix)}


def _accuracy(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def summarise(k: int, cells: list[dict[str, float]], n_queries: int) -> dict[str, Any]:
    """Mean and std over seeds of one k."""
    row: dict[str, Any] = {"k": k, "seeds": len(cells), "queries": n_queries}
    for key in [key for key in ("acc", "acc_norm", "acc_calib") if key in cells[0]]:
        values = [c[key] for c in cells]
        row[f"{key}_mean"] = statistics.fmean(values)
        row[f"{key}_std"] = statistics.pstdev(values)
    row["prefix_tokens"] = round(statistics.fmean(c["prefix_tokens"] for c in cells))
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


def chat_template(module: TaskModule, cfg: DictConfig) -> str | None:
    """The model's chat template for icl.chat=true (None: plain-text prompts); asked before
    any data is read, so a model never taught a conversation is refused at once."""
    if not cfg.icl.chat:
        return None
    if module.tokenizer.chat_template is None:
        raise ConfigError(
            f"icl.chat=true: ckpt_path={cfg.ckpt_path} has no chat template (chat_template in "
            "tokenizer_config.json, or chat_template.jinja); drop it to prompt in plain text"
        )
    return module.tokenizer.chat_template


def scorer_for(module: LanguageModel, prefix_cache: bool) -> Scorer:
    """Prefix-cached scoring where the encoder encodes incrementally, else whole prompts."""
    if prefix_cache and module.backbone.encoder.incremental:
        return lambda prefix: prefix_cached(module, prefix)
    return lambda prefix: whole_prompt(lm_logits(module), prefix)


def run(module: TaskModule, saved: DictConfig, data: DictConfig, cfg: DictConfig) -> dict:
    """`python eval.py mode=icl ...`: a k-shot table over seeds, as JSON, markdown and PNG."""
    icl = cfg.icl
    if module.task_name not in LANGUAGE_MODELS:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: mode=icl needs a language model checkpoint")
    chat = chat_template(module, cfg)
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
    prompter = Prompter(template, module.tokenizer, chat, icl.chat_instruction)
    scorer = scorer_for(module.eval(), icl.prefix_cache)
    rows = []
    for k in icl.shots:
        cells = [
            evaluate_shots(
                scorer,
                prompter,
                pool,
                queries,
                k,
                s,
                icl.balanced,
                budget,
                content_free=icl.content_free if icl.calibrate else None,
            )
            for s in range(icl.seeds if k else 1)  # k=0 draws nothing: every seed is the same
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
    return {
        "mode": "icl",
        "rows": rows,
        "context_tokens": budget,
        "template": asdict(template),
        "ckpt_path": str(cfg.ckpt_path),
    }
