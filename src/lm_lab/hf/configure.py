"""`init_from=<hf dir>` in a training run: the folder's config.json replaces the run's model
group and its tokenizer replaces the run's; only `model.dropout` and
`model.gradient_checkpointing` may still be set."""

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lm_lab.hf.folder import is_hf_source
from lm_lab.hf.load import Pretrained
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import get_logger

log = get_logger(__name__)

FREE_MODEL_KEYS = ("dropout", "gradient_checkpointing")  # change no weight's shape or meaning


def model_overrides() -> list[str]:
    """The command line's `model=...` and `model.<key>=...` overrides (none outside Hydra)."""
    if not HydraConfig.initialized():
        return []
    return [
        o
        for o in HydraConfig.get().overrides.task
        if o.split("=")[0].lstrip("+~") == "model" or o.lstrip("+~").startswith("model.")
    ]


def use_pretrained(cfg: DictConfig) -> Pretrained | None:
    """For init_from=<hf dir or Hub id>: rewrites cfg.model and cfg.tokenizer in place from the
    folder and returns it; None (cfg untouched) for any other init_from."""
    if not is_hf_source(cfg.get("init_from")):
        return None
    pretrained = Pretrained(cfg.init_from)
    overrides = model_overrides()
    bad = [
        o
        for o in overrides
        if o.lstrip("+~").split("=")[0] not in (f"model.{k}" for k in FREE_MODEL_KEYS)
    ]
    if bad:
        raise ConfigError(
            f"init_from={cfg.init_from} takes the model from its config.json; drop {bad[0]} "
            f"(only {', '.join(f'model.{k}' for k in FREE_MODEL_KEYS)} may be set)"
        )
    pretrained.tokenizer()  # a tokenizer that does not fit the embedding fails now, not later
    model = dict(pretrained.model)
    for key in FREE_MODEL_KEYS:
        if any(o.lstrip("+").startswith(f"model.{key}=") for o in overrides):
            model[key] = cfg.model[key]
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model)
        cfg.tokenizer = OmegaConf.create(
            {
                "_target_": "lm_lab.data.tokenization.tokenizers.PretrainedTokenizer",
                "path": str(pretrained.folder),
            }
        )
    log.info(
        f"init_from={cfg.init_from}: model group replaced by its config.json "
        f"({pretrained.hf['model_type']}, d_model={model['d_model']}, "
        f"n_layers={model['n_layers']}), tokenizer=hf from the same folder"
    )
    return pretrained
