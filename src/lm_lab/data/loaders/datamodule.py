"""`TextDataModule`: one source, one tokenizer, one task -> the train/val/test dataloaders.

classify: labelled examples, right-padded batches {"input_ids", "pad_mask", "labels"}.
generate: token streams cut into windows {"input_ids", "targets"}; labels, if any, are ignored.
sft: conversations (`source.load_conversations()`), one or several (packed) per row, batches
{"input_ids", "targets"[, "segments"]} with targets on the replies only (`instructions.py`).
"""

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lm_lab.data.loaders.classification import (
    TRAINING_SPLIT,
    ClassificationDataset,
    collate,
    label_names_of,
)
from lm_lab.data.loaders.counts import check_counts
from lm_lab.data.loaders.instructions import (
    InstructionDataset,
    InstructionExamples,
    padding_stats,
    texts,
)
from lm_lab.data.loaders.instructions import collate as collate_rows
from lm_lab.data.loaders.language_modeling import EvalWindows, RandomWindows, WindowBatches
from lm_lab.data.loaders.resumable import ResumableLoader, SeededShuffle
from lm_lab.data.loaders.sharding import eval_share, ranks
from lm_lab.data.preparation.prepare import MemoryCorpus, PreparedCorpus, prepare
from lm_lab.data.preparation.shards import TokenShards
from lm_lab.data.sources.conversations import Conversation
from lm_lab.data.sources.split import Split, drop_seen_in_evaluation
from lm_lab.data.tokenization.conversation import PlainTemplate
from lm_lab.data.tokenization.tokenizers import Tokenizer
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

TASKS = ("classify", "generate", "sft")
EXAMPLE_TASKS = ("classify", "sft")  # one example (or packed row) per item, batched here
CONVERSATION_DATA = "jsonl/parquet/hf (prompt/response, messages, Alpaca records) or pydoc_sft"
TRAINED_HEAD = ("the checkpoint's head", "evaluate it on data labelled with those names only")
LABELLED_DATA = "csv/jsonl/pydoc/sst2/ag_news"


class TextDataModule(L.LightningDataModule):
    """Loads the source once, fits the tokenizer on the training texts unless it arrives fitted
    (e.g. from a pretrained checkpoint), and builds the datasets of `task`.

    After `setup()`: `tokenizer`, `label_names` (None for generate), `stats` (flat counts such as
    "train/examples", "validation/dropped_empty_text", "test/unknown_chars"), `chars_per_token`
    (split name -> characters per token of that split's stream, for bits per character; empty for
    classify) and the dataloaders. Without a test split, testing uses validation (`test_split`
    says which, and `chars_per_token["test"]` is validation's).

    `label_names` given (eval.py: a trained head's order) fixes the label ids by name; labels the
    head does not know are refused. None: the sorted labels of the training split.
    `max_eval_examples` scores the first N validation and test examples: a fixed subsample that
    makes a large test set affordable on a CPU, for every row of a table alike (its count is in
    `stats[...dropped_over_budget]`).

    generate: the corpus is prepared once into memory-mapped token shards (`prepare.py`), from
    the files themselves when the source streams them (`documents.TextFiles`), else from the
    loaded texts; `stats["train/tokens_seen"]` counts the training tokens fed to the model.

    sft: the source's conversations rendered with the tokenizer's chat template, else
    `template`; `max_length` tokens per row, `truncation` (skip | cut) for longer ones,
    `packing` several conversations per row (stats `train/padding_saved`, ...).
    """

    def __init__(
        self,
        source: Any,
        tokenizer: Tokenizer,
        task: str,
        batch_size: int = 32,
        max_length: int = 256,
        block_size: int = 128,
        train_windows_per_epoch: int = 2000,
        eval_windows: int | None = None,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        root: str | None = None,  # the source's folder, if any; named in messages
        cache_dir: str | None = None,  # LM token shards are prepared here; None = a temp folder
        label_names: list[str] | None = None,  # a trained head's label order; None = from train
        num_proc: int | None = None,  # processes tokenizing for char/byte; None = all cores
        template: PlainTemplate | None = None,  # sft: the plain template (no chat template)
        packing: bool = False,  # sft: several conversations per row of max_length tokens
        truncation: str = "skip",  # sft: a conversation longer than max_length: skip | cut
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"task={task!r}: the data layer builds one of {', '.join(TASKS)}")
        check_counts(
            {
                "batch_size": batch_size,
                "max_length": max_length,
                "block_size": block_size,
                "train_windows_per_epoch": train_windows_per_epoch,
                "eval_windows": eval_windows,
                "max_train_examples": max_train_examples,
                "max_eval_examples": max_eval_examples,
                "num_workers": num_workers,
                "num_proc": num_proc,
            }
        )
        self.source, self.tokenizer, self.task = source, tokenizer, task
        self.batch_size, self.max_length, self.block_size = batch_size, max_length, block_size
        self.train_windows_per_epoch, self.eval_windows = train_windows_per_epoch, eval_windows
        self.max_train_examples, self.num_workers, self.seed = max_train_examples, num_workers, seed
        self.max_eval_examples = max_eval_examples
        self.root, self.cache_dir, self.num_proc = root, cache_dir, num_proc
        self.label_names = label_names
        self.template, self.packing, self.truncation = template, packing, truncation
        self.sparse_targets = task == "sft"  # most targets are prompts' -100: project the rest
        self.stats: dict[str, int | float] = {}
        self.chars_per_token: dict[str, float] = {}
        self.test_split = "test"
        self._datasets: dict[str, Dataset] = {}
        self._prepared: PreparedCorpus | None = None  # holds an uncached corpus's folder

    # ---- setup ---------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Idempotent: the first call does the work for every stage."""
        if self._datasets:
            return
        started = time.perf_counter()
        if self.task == "classify":
            splits = self._load()
            if not self.tokenizer.is_fitted:
                self.tokenizer.fit(splits["train"].texts)
            self._build_classification(splits)
        elif self.task == "sft":
            self._build_instructions()
        else:  # the tokenizer is fitted by `prepare`, on a sample of the training documents
            self._build_language_modeling()
        self.stats["setup_ms"] = round(1000 * (time.perf_counter() - started))
        log.info(f"data setup took {self.stats['setup_ms'] / 1000:.2f}s")
        self._report()

    def _load(self) -> dict[str, Split]:
        splits = self._adopt(drop_seen_in_evaluation(self.source.load()))
        if self.task == "classify" and not splits["train"].has_labels:
            raise ConfigError(
                f"task=classify needs labelled data: data={self._name()} has no labels; "
                f"use data={LABELLED_DATA} or task=generate"
            )
        return splits

    def _adopt(self, splits: dict[str, Any]) -> dict[str, Any]:
        """A source's splits (texts or conversations): train and validation required, test on
        validation without a test split, the source's counts added to `stats`."""
        for required in ("train", "validation"):
            if not splits.get(required):
                raise ConfigError(f"data={self._name()}: the source has no {required} split")
        if "test" not in splits:
            self._test_on_validation()
        for name, split in splits.items():
            self.stats |= {f"{name}/{key}": n for key, n in getattr(split, "stats", {}).items()}
        return splits

    def _test_on_validation(self) -> None:
        self.test_split = "validation"
        self.stats["test/from_validation"] = 1
        log.info(f"data={self._name()} has no test split: testing on validation")

    def _build_classification(self, splits: dict[str, Split]) -> None:
        known_by = TRAINED_HEAD if self.label_names is not None else TRAINING_SPLIT
        if self.label_names is None:
            self.label_names = label_names_of(splits["train"])
            if len(self.label_names) < 2:
                raise ConfigError(
                    f"{splits['train'].origin}: classification needs at least 2 labels in the "
                    f"training split, found {self.label_names}; check data.source.label_column"
                )
        self.stats["train/labels"] = len(self.label_names)
        for name, split in splits.items():
            budget = self.max_train_examples if name == "train" else self.max_eval_examples
            dataset = ClassificationDataset.from_split(
                split, name, self.tokenizer, self.label_names, self.max_length, budget, known_by
            )
            if len(dataset) == 0:
                raise ConfigError(
                    f"{split.origin}: no labelled, non-empty texts in the {name} split"
                )
            self._datasets[name] = dataset
            self.stats |= {f"{name}/{key}": n for key, n in dataset.stats.items()}

    def _build_language_modeling(self) -> None:
        streams_files = hasattr(self.source, "documents")
        corpus = self.source if streams_files else MemoryCorpus(self._load())
        prepared = prepare(corpus, self.tokenizer, self.cache_dir, self.num_proc)
        self.tokenizer, self._prepared = prepared.tokenizer, prepared
        self.stats |= prepared.stats()
        if streams_files and "test" not in prepared.splits:
            self._test_on_validation()
        shards = {name: prepared.shards(name) for name in prepared.splits}
        for name, stream in shards.items():
            self._check_stream(name, stream, self._name())
        self._datasets["train"] = WindowBatches(shards["train"], self.block_size)
        self.stats["train/windows_per_epoch"] = self.train_windows_per_epoch
        for name in [name for name in shards if name != "train"]:
            windows = EvalWindows(shards[name], self.block_size, self.batch_size, self.eval_windows)
            self._datasets[name] = windows
            self.stats[f"{name}/windows"] = windows.n_windows
        self.chars_per_token = {name: prepared.chars_per_token(name) for name in shards}
        self.chars_per_token.setdefault("test", self.chars_per_token[self.test_split])

    def _load_conversations(self) -> dict[str, list[Conversation]]:
        if not hasattr(self.source, "load_conversations"):
            raise ConfigError(
                f"task=sft needs conversations: data={self._name()} has none; use "
                f"data={CONVERSATION_DATA}"
            )
        return self._adopt(self.source.load_conversations())

    def _build_instructions(self) -> None:
        splits = self._load_conversations()
        if not self.tokenizer.is_fitted:  # on the training conversations as the model reads them
            self.tokenizer.fit(texts(splits["train"], self.tokenizer, self.template))
        for name, conversations in splits.items():
            examples = InstructionExamples.encode(
                conversations, self.tokenizer, self.template, self.max_length, self.truncation
            )
            if not examples.examples:
                raise ConfigError(
                    f"data={self._name()}: no conversation of the {name} split fits "
                    f"data.max_length={self.max_length} ({examples.stats['too_long']} too long, "
                    f"data.truncation={self.truncation}); raise data.max_length or set "
                    "data.truncation=cut"
                )
            self._datasets[name] = InstructionDataset.of(examples, self.max_length, self.packing)
            self.stats |= {f"{name}/{key}": n for key, n in examples.stats.items()}
        if self.packing:
            self._report_packing(self._datasets["train"])

    def _report_packing(self, train: InstructionDataset) -> None:
        lengths = [len(e) for e in train.examples]
        padding = padding_stats(lengths, train.rows, self.max_length)
        self.stats |= {f"train/{key}": round(v, 4) for key, v in padding.items()}
        self.stats["train/rows"] = len(train.rows)
        log.info(
            f"data.packing=true: {len(lengths)} conversations in {len(train.rows)} rows of "
            f"{self.max_length} tokens; padding {padding['pad_fraction_unpacked']:.1%} -> "
            f"{padding['pad_fraction_packed']:.1%} ({padding['padding_saved']:.1%} of it saved)"
        )

    def _check_stream(self, name: str, stream: TokenShards, origin: str) -> None:
        longest = int(stream.lengths.max())
        if longest < self.block_size + 1:
            raise ConfigError(
                f"data.block_size={self.block_size}: the {name} split ({origin}) has only "
                f"{longest} tokens; lower data.block_size below {longest}"
            )

    def texts_and_labels(self, split: str) -> tuple[list[str], list[int]]:
        """Raw texts and label ids of the classification examples of `split` (train, validation
        or test; test means `test_split`): the very examples the model trains and is scored on,
        for a reference model that reads text, not tokens."""
        self.setup()
        if self.task != "classify":
            raise ValueError("texts_and_labels: only classification data has labels")
        dataset = self._datasets[self.test_split if split == "test" else split]
        return dataset.texts, dataset.labels

    def _name(self) -> str:
        name = getattr(self.source, "name", type(self.source).__name__)
        return f"{name} ({self.root})" if self.root else name

    def _report(self) -> None:
        counts = ", ".join(f"{key}={n}" for key, n in self.stats.items())
        log.info(f"data={self._name()} task={self.task} tokenizer={self.tokenizer}: {counts}")

    # ---- dataloaders ---------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """Data-parallel: each rank trains on its own share of every epoch (see `_ranks`)."""
        self.setup()
        dataset = self._datasets["train"]
        rank, world = ranks(self.trainer)
        if self.task in EXAMPLE_TASKS:
            if world == 1:
                return self._loader(dataset, sampler=SeededShuffle(len(dataset), self.seed))
            self.stats["train/dropped_per_epoch_for_equal_ranks"] = len(dataset) % world
            sampler = DistributedSampler(dataset, world, rank, seed=self.seed, drop_last=True)
            return self._loader(dataset, sampler=sampler)
        sampler = RandomWindows(
            len(dataset) + self.block_size,  # as if the shards' valid starts were one stream
            self.block_size,
            self.batch_size,
            self.train_windows_per_epoch,
            self.seed,
            rank,
            world,
        )
        self.stats["train/windows_per_epoch"] = sampler.n_windows  # rounded up to fill all ranks
        return self._loader(dataset, sampler=sampler)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the training tokens of every rank (ranks take equal shares)."""
        trainer = self.trainer
        if self.task == "generate" and trainer is not None and trainer.training:
            seen = batch["input_ids"].numel() * trainer.world_size
            self.stats["train/tokens_seen"] = self.stats.get("train/tokens_seen", 0) + seen
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def _eval_loader(self, split: str) -> DataLoader:
        """Every example (classify) or window batch (generate) is scored by exactly one rank:
        rank r takes items r, r + W, ...; ranks differ by at most one item, which is fine for
        evaluation (no gradient sync), and the metrics are summed over ranks (torchmetrics).
        Examples are batched longest first: each batch pads to its longest, so similar lengths
        together score ~1.7x fewer tokens on SST-2 and AG News (the metrics are order-free)."""
        self.setup()
        dataset = self._datasets[split]
        rank, world = ranks(self.trainer)
        unit = "examples" if self.task in EXAMPLE_TASKS else "batches of windows"
        rows: Sequence[int] = range(len(dataset))
        if world > 1:
            rows = eval_share(len(dataset), rank, world, f"the {split} split's {unit}")
            log.info(f"{split}: {len(dataset)} {unit} over {world} ranks, each scored once")
        if self.task == "classify":
            rows = sorted(rows, key=lambda i: len(dataset.token_ids[i]), reverse=True)
        elif self.task == "sft":
            rows = sorted(rows, key=dataset.row_length, reverse=True)
        return self._loader(dataset, sampler=rows)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """LM datasets yield whole batches (batch_size=None); classification and sft ones are
        batched and padded here. Training samplers are seeded per epoch and the loader
        resumable, so a run resumed mid-epoch sees the same batches; a seeded generator fixes
        worker seeds."""
        batching: dict[str, Any] = {"batch_size": None}
        if self.task in EXAMPLE_TASKS:
            pad = self.tokenizer.pad_id
            batch = (
                partial(collate, pad_id=pad)
                if self.task == "classify"
                else partial(collate_rows, pad_id=pad, packed=self.packing)
            )
            batching = {"batch_size": self.batch_size, "collate_fn": batch}
        return ResumableLoader(
            dataset,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **batching,
            **kwargs,
        )
