"""How a run writes its checkpoints: whole files only, and best.ckpt without optimizer state.

Lightning's TorchCheckpointIO buffers the checkpoint in memory, writes it to a temporary file in
the system's temp dir and `shutil.move`s it over the old one: across file systems that move is a
copy into the destination itself, so a full run dir used to leave a truncated last.ckpt (and a
full /tmp failed every save). `AtomicCheckpointIO` writes beside the destination and renames
(`lm_lab.checkpoint.write_checkpoint`), through which every save goes: ModelCheckpoint's, and
GracefulStop's on a signal.

`RunCheckpoint` keeps last.ckpt resumable (the whole training state) but saves best.ckpt with
the weights alone: AdamW's two moments per parameter make a full checkpoint three times the
weights (e.g. 332 MB instead of 111 MB for experiment=pydoc_classify, whose three 262,144 x 32
n-gram tables are most of it), and the best checkpoint is only ever tested, evaluated,
sampled, exported or loaded, never resumed.

`DataOnlyFSDP` is Lightning's FSDP strategy with one read changed: Lightning opens a one-file
checkpoint with its own lazy unpickler, which runs whatever the file names whatever
`weights_only` says, and a sharded folder's metadata with plain `pickle`. lm_lab checks every
path it is given before Lightning, but Lightning also finds files itself (`ckpt_path=last`,
SLURM's `hpc` requeue): every path the strategy is handed is read as data first."""

from pathlib import Path
from typing import Any

import lightning as L
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import FSDPStrategy

from lm_lab.checkpoint import load_plain, write_checkpoint
from lm_lab.utils.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves never leave a partial file (remote ones are
    Lightning's own)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(checkpoint, path)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that saves the full state into last.ckpt only (resume needs it) and the
    weights alone into the top-k files (best.ckpt), unless `save_weights_only` asks for weights
    everywhere."""

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's own key, so a run whose last.ckpt was written by Lightning's class
        (before this one) resumes with its best score and path."""
        return ModelCheckpoint.__qualname__ + super().state_key.removeprefix(
            type(self).__qualname__
        )

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # _save_last_checkpoint sets last_model_path before it saves: any other file is top-k
        full = filepath == self.last_model_path and not self.save_weights_only
        configured, self.save_weights_only = self.save_weights_only, not full
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = configured


class DataOnlyFSDP(FSDPStrategy):
    """FSDPStrategy that loads a checkpoint file only if it reads as data, and a sharded
    folder only if this process wrote it (the test after fit reads the run's own best)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written: set[Path] = set()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any = None
    ) -> None:
        super().save_checkpoint(checkpoint, filepath, storage_options)
        self._written.add(Path(filepath).resolve())

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> Any:
        path = Path(self.broadcast(checkpoint_path))
        if path.is_dir() and path.resolve() not in self._written:
            raise ConfigError(  # DCP unpickles a sharded folder's metadata and extra values
                f"ckpt_path: {path} is a sharded FSDP checkpoint of another run; its metadata "
                "is a pickle, which lm_lab never runs: save with "
                "trainer.strategy.state_dict_type=full to continue FSDP runs"
            )
        if not path.is_dir():
            load_plain(path, f"ckpt_path={path}", mmap=True)  # refuses a pickled object by name
        return super().load_checkpoint(checkpoint_path, weights_only)
