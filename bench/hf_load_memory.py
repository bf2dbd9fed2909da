"""Memory of loading a Hugging Face folder: RSS rise (peak minus before) while
`lm_lab.hf.load.load_language_model` reads a random ~0.5B-parameter Llama saved in fp32.

    python bench/hf_load_memory.py [--dir /tmp/hf_05b] [--keep]

The model is built and saved by `transformers` in a child process (its memory is not counted),
loaded in another fresh child, and deleted afterwards unless --keep.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CONFIG = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=16,
    vocab_size=50_000,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)

SAVE = """
import sys, torch, transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
torch.manual_seed(0)
config = transformers.LlamaConfig(**{config})
with torch.device("cpu"):
    model = transformers.LlamaForCausalLM(config)
model.save_pretrained(sys.argv[1], max_shard_size="100GB")
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel()
tok.train_from_iterator(["a few words to train on"] * 10, trainers.BpeTrainer(vocab_size=300))
tok.save(sys.argv[1] + "/tokenizer.json")
print(sum(p.numel() for p in model.parameters()))
"""

LOAD = """
import json, resource, sys, time
import torch
from lm_lab.hf.load import load_language_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the peak so far = now
started = time.perf_counter()
module, _ = load_language_model(sys.argv[1])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = sum(p.numel() for p in module.parameters())
print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds, "params": params}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hf_load_memory_05b"))
    parser.add_argument("--keep", action="store_true", help="keep the saved model")
    args = parser.parse_args()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    try:
        if not (args.dir / "config.json").is_file():
            code = SAVE.replace("{config}", repr(CONFIG))
            subprocess.run([sys.executable, "-c", code, str(args.dir)], check=True, env=env)
        size = sum(f.stat().st_size for f in args.dir.glob("*.safetensors"))
        out = (
            subprocess.run(
                [sys.executable, "-c", LOAD, str(args.dir)],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        result = json.loads(out)
        rise = (result["peak_kib"] - result["before_kib"]) * 1024
        print(
            f"params {result['params'] / 1e6:.0f}M, file {size / 2**30:.2f} GiB, "
            f"RSS rise {rise / 2**30:.2f} GiB = {rise / size:.2f}x file, "
            f"load {result['seconds']:.1f} s"
        )
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
