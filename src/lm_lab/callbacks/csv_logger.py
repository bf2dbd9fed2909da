"""Lightning's CSVLogger, except that a resumed run appends to its own metrics.csv.

Lightning deletes an existing metrics.csv when a logger starts in a non-empty folder; a run dir
holds exactly one run, so the file there can only be this run's earlier rows (before a SIGTERM)
and must be kept. Rows logged after the checkpoint a run resumes from (a kill -9 lands after
some were written) are dropped, since the resumed run logs those steps again."""

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep the file and its columns instead of deleting it."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def drop_rows_from(self, step: int) -> None:
        """Rewrites metrics.csv without its rows of step >= `step` (rows still in memory were
        logged by this process and are kept)."""
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            fieldnames = list(reader.fieldnames or [])
            rows = [row for row in reader if int(float(row.get("step") or -1)) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives an interruption and grows on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def resume_at(self, step: int) -> None:
        """The run continues from a checkpoint taken after `step` optimizer steps: rows of the
        steps it will replay (step >= `step`) are dropped, so none appears twice."""
        self.experiment.drop_rows_from(step)
