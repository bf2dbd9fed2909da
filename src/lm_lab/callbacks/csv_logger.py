"""Lightning's CSVLogger, except that a resumed run appends to its own metrics.csv.

Lightning deletes an existing metrics.csv when a logger starts in a non-empty folder; a run dir
holds exactly one run, so the file there can only be this run's earlier rows (before a SIGTERM)
and must be kept."""

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep the file and its columns instead of deleting it."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives an interruption and grows on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
