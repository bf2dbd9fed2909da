"""Wall and CPU time of task.baseline=tfidf_lr (vectorizers + the 3 C fits + scoring) on N training
texts: a CSV data set's training rows repeated up to --rows, its own validation and test splits.

    python bench/baseline_speed.py [--data ../shared/data/sst2] [--rows 100000]
"""

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lm_lab.baselines.tfidf_lr import TfidfLogisticRegression  # noqa: E402


def read(path: Path, names: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = names or sorted({r["label"] for r in rows})
    return [r["text"] for r in rows], [names.index(r["label"]) for r in rows], names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--rows", type=int, default=100_000, help="training texts (repeated)")
    args = parser.parse_args()
    texts, labels, names = read(args.data / "train.csv")
    repeats = -(-args.rows // len(texts))
    train = ((texts * repeats)[: args.rows], (labels * repeats)[: args.rows])
    val, test = (read(args.data / f"{s}.csv", names)[:2] for s in ("validation", "test"))
    words = sum(len(t.split()) for t in train[0]) / len(train[0])
    started, cpu_started = time.perf_counter(), time.process_time()
    scores = TfidfLogisticRegression().fit_score(train, val, test)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print("| data | texts | words/text | wall s | CPU s | scores |")
    row = (args.data.name, f"{args.rows:,}", f"{words:.1f}", f"{seconds:.1f}", f"{cpu:.1f}", scores)
    print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
