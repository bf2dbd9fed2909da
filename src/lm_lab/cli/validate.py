"""Config values checked before anything is built, so a bad number fails in a second with the key
to change instead of after the data has loaded (or as a shape error deep in a forward pass).

This is the one place for checks of a config value on its own or against other config values;
constructors keep only what they alone can know (e.g. rope's even head size, a LoRA target that
matches no weight). `check_batches_per_epoch` is the one check that needs the data's size when
the config alone cannot tell it."""

import math
from collections.abc import Callable
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lm_lab.checkpoint import CheckpointMeta, read_checkpoint
from lm_lab.data.loaders.counts import check_counts
from lm_lab.data.loaders.instructions import check_truncation
from lm_lab.finetune.transfer import check_architecture
from lm_lab.hf.folder import is_hf_source
from lm_lab.tasks.metrics import LANGUAGE_MODELS, METRICS
from lm_lab.utils.errors import ConfigError

_ABSENT = object()
LIGHTNING_CKPT_NAMES = ("last", "hpc", "best")  # ckpt_path values Lightning looks up itself
GPU_ACCELERATORS = ("gpu", "cuda")


def _int_at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(v: Any) -> bool:
    """In [0, 1): a dropout probability or an Adam beta."""
    return _number(v) and 0 <= v < 1


def _betas(v: Any) -> bool:
    return OmegaConf.is_list(v) and len(v) == 2 and all(map(_fraction, v))


def _val_check_interval(v: Any) -> bool:
    return v is None or _int_at_least(1)(v) or (isinstance(v, float) and 0 < v <= 1)


# key, test, what the value must be (said in the message); keys a config lacks are skipped
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("model.d_model", _int_at_least(1), "an integer >= 1"),
    ("model.n_layers", _int_at_least(1), "an integer >= 1"),
    ("model.n_heads", _int_at_least(1), "an integer >= 1 that divides model.d_model"),
    ("model.dropout", _fraction, "a number in [0, 1)"),
    ("task.head_dropout", _fraction, "a number in [0, 1)"),
    ("task.members", _int_at_least(1), "an integer >= 1 (models trained side by side, averaged)"),
    ("task.monitor_mode", lambda v: v in ("min", "max"), "min or max"),
    ("task.optimizer.lr", lambda v: _number(v) and v > 0, "a finite number > 0, e.g. 1e-3"),
    ("task.optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("task.optimizer.betas", _betas, "two numbers in [0, 1), e.g. [0.9,0.99]"),
    ("task.scheduler.warmup_steps", _int_at_least(0), "an integer >= 0"),
    ("task.scheduler.min_lr_ratio", lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("finetune.rank", _int_at_least(1), "an integer >= 1 (the rank of each LoRA update)"),
    ("finetune.length", _int_at_least(1), "an integer >= 1 (soft-prompt vectors)"),
    ("finetune.dropout", _fraction, "a number in [0, 1)"),
    ("trainer.max_epochs", lambda v: v == -1 or _int_at_least(1)(v), "-1 or an integer >= 1"),
    ("trainer.max_steps", lambda v: v == -1 or _int_at_least(1)(v), "-1 or an integer >= 1"),
    ("trainer.accumulate_grad_batches", _int_at_least(1), "an integer >= 1"),
    (
        "trainer.gradient_clip_val",
        lambda v: v is None or (_number(v) and v > 0),
        "null or a number > 0",
    ),
    (
        "trainer.val_check_interval",
        _val_check_interval,
        "null (once per epoch), an integer >= 1 (batches) or a fraction in (0, 1] of an epoch",
    ),
]


def validate_config(cfg: DictConfig) -> None:
    """Raises ConfigError("<key>=<value>: must be ...") for the first value out of range (keys a
    config does not have, e.g. model.n_heads of the BiLSTM, are skipped), then checks values
    against each other, against the machine and against the checkpoint to start from. Reads no
    data (checkpoints only)."""
    check_model_shape()
    for key, ok, what in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    if cfg.get("data") is not None:
        check_counts(cfg.data)  # the datamodule's own check, before any data is read
    for check in (
        _heads_divide_width,
        _sequence_fits_positions,
        _monitor_is_logged,
        _gpu_exists,
        _language_model_is_causal,
        _instruction_data,
    ):
        check(cfg)
    check_batches_per_epoch(cfg, _config_batches_per_epoch(cfg))
    _checkpoints_fit_the_run(cfg)


def _heads_divide_width(cfg: DictConfig) -> None:
    d_model, n_heads = cfg.model.get("d_model"), cfg.model.get("n_heads")
    if n_heads is not None and d_model % n_heads:
        nearest = max(n for n in range(1, n_heads + 1) if d_model % n == 0)
        raise ConfigError(
            f"model.n_heads={n_heads}: must divide model.d_model={d_model}; "
            f"use e.g. model.n_heads={nearest}"
        )


def _sequence_fits_positions(cfg: DictConfig) -> None:
    """Learned positions have model.max_len rows: the longest sequence (a window, or an
    example plus the soft prompt) must fit in them."""
    if cfg.model.get("positions") != "learned":
        return
    key = "data.block_size" if cfg.task.name == "generate" else "data.max_length"
    length = OmegaConf.select(cfg, key)
    prompt = OmegaConf.select(cfg, "finetune.length") or 0  # finetune=prompt prepends these
    if length is not None and length + prompt > cfg.model.max_len:  # None: synthetic data
        plus = f" + finetune.length={prompt}" if prompt else ""
        raise ConfigError(
            f"{key}={length}{plus}: longer than model.max_len={cfg.model.max_len} "
            f"(positions=learned); lower {key} or raise model.max_len"
        )


def _language_model_is_causal(cfg: DictConfig) -> None:
    """A language model (generate, sft) predicts each token from the ones before it only."""
    causal = cfg.task.get("causal")
    if cfg.task.name in LANGUAGE_MODELS and causal is not True:
        raise ConfigError(
            f"task.causal={'null' if causal is None else str(causal).lower()}: "
            f"task={cfg.task.name} trains a causal language model, which must never see the "
            "tokens it predicts; set task.causal=true"
        )
    head_only = str(OmegaConf.select(cfg, "finetune._target_")).endswith(".head.Head")
    if cfg.task.name in LANGUAGE_MODELS and head_only and cfg.model.get("tie_embeddings", True):
        raise ConfigError(
            f"finetune=head: task={cfg.task.name}'s output layer is the token embedding "
            "(model.tie_embeddings=true), so nothing of its own would train; use finetune="
            "lora|ia3|bitfit|full, or a model with an untied head"
        )


def _instruction_data(cfg: DictConfig) -> None:
    """task=sft's data settings: a known truncation; packing only where the encoder keeps
    packed conversations apart (attention-only stacks) and nothing is prepended to a row."""
    data = cfg.get("data")
    if cfg.task.name != "sft" or data is None or "truncation" not in data:
        return
    check_truncation(data.truncation)
    if not data.get("packing"):
        return
    if not getattr(get_class(cfg.model._target_), "packable", False):
        raise ConfigError(
            f"data.packing=true: {cfg.model._target_.rsplit('.', 1)[-1]} cannot keep packed "
            "conversations apart (its recurrence or convolution runs across them); use "
            "model=transformer, or data.packing=false"
        )
    if str(OmegaConf.select(cfg, "finetune._target_")).endswith(".prompt.Prompt"):
        raise ConfigError(
            "data.packing=true: finetune=prompt prepends its vectors to a row, not to each "
            "packed conversation; use data.packing=false with it"
        )


def _monitor_is_logged(cfg: DictConfig) -> None:
    """The best checkpoint is picked by a metric the task logs at validation (looked up by
    task name: importing the task class would load Lightning)."""
    metrics = METRICS.get(cfg.task.name)
    if metrics is None:
        return
    logged = [f"val/{name}" for name in metrics]
    if cfg.task.monitor not in logged:
        raise ConfigError(
            f"task.monitor={cfg.task.monitor}: task={cfg.task.name} never logs it; "
            f"use one of {', '.join(logged)}"
        )


def _gpu_exists(cfg: DictConfig) -> None:
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in GPU_ACCELERATORS:
        import torch  # only for runs that ask for a GPU

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator}: no GPU is visible on this machine; "
                "use trainer=cpu (or trainer.accelerator=auto: a GPU when there is one)"
            )


def _config_batches_per_epoch(cfg: DictConfig) -> int | None:
    """Training batches per epoch when the config alone tells (LM windows, an integer
    trainer.limit_train_batches), else None (classification: known once the data is read)."""
    known = []
    limit = OmegaConf.select(cfg, "trainer.limit_train_batches")
    if _int_at_least(1)(limit):
        known.append(limit)
    windows = OmegaConf.select(cfg, "data.train_windows_per_epoch")
    if cfg.task.name == "generate" and _int_at_least(1)(windows):
        known.append(math.ceil(windows / cfg.data.batch_size))
    return min(known, default=None)


def check_batches_per_epoch(cfg: DictConfig, n_batches: int | None) -> None:
    """An integer trainer.val_check_interval counts training batches of an epoch: it must not
    exceed their number (Lightning would refuse it once the data is loaded)."""
    interval = OmegaConf.select(cfg, "trainer.val_check_interval")
    across_epochs = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch") is None
    if across_epochs or n_batches is None or not _int_at_least(1)(interval):
        return  # check_val_every_n_epoch=null: the interval counts steps across epochs
    if interval > n_batches:
        raise ConfigError(
            f"trainer.val_check_interval={interval}: more than the {n_batches} training batches "
            f"of an epoch; use at most {n_batches}, a fraction such as 0.5, or null (or set "
            "trainer.check_val_every_n_epoch=null to count steps across epochs)"
        )


def _checkpoints_fit_the_run(cfg: DictConfig) -> None:
    """ckpt_path continues a run of the same task; init_from must be a readable checkpoint
    (its errors name init_from=, the key the user typed) or a Hugging Face folder, which
    `hf.configure.use_pretrained` has checked already."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
        ckpt = read_checkpoint(ckpt_path)
        task = CheckpointMeta.from_checkpoint(ckpt).config.get("task", {}).get("name")
        if task is not None and task != cfg.task.name:
            raise ConfigError(
                f"ckpt_path={ckpt_path}: a task={task} checkpoint cannot continue as "
                f"task={cfg.task.name}; start from its backbone with init_from={ckpt_path}"
            )
        check_architecture(
            cfg.model, ckpt, ckpt_path, key="ckpt_path", free=("dropout", "gradient_checkpointing")
        )
        if cfg.get("train", True) and "optimizer_states" not in ckpt:
            raise ConfigError(
                f"ckpt_path={ckpt_path}: holds the weights only (best.ckpt does), not the "
                "training state; continue from <its run dir>/checkpoints/last.ckpt, or test it "
                "with eval.py"
            )
    if cfg.get("init_from") and not is_hf_source(cfg.init_from):
        read_checkpoint(cfg.init_from, key="init_from")


def check_model_shape() -> None:
    """An experiment that picks `shape=` must have a shape for the chosen encoder: Hydra's
    `optional` defaults entry would silently train the encoder's own default shape instead."""
    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return  # composed and cleared already (tests): the shape files cannot be listed
    choices = HydraConfig.get().runtime.choices
    shape, model = choices.get("shape"), choices.get("model")
    if shape in (None, "none"):
        return
    options = GlobalHydra.instance().config_loader().get_group_options(f"model_shape/{shape}")
    if model not in options:
        raise ConfigError(
            f"shape={shape}: no conf/model_shape/{shape}/{model}.yaml for model={model}; "
            f"add that file or pick model= among {', '.join(options)}"
        )
