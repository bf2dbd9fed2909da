"""Reference models fitted on a run's own raw splits and reported beside the model (no torch)."""
