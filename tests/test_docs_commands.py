"""Every command in the ```bash blocks of README.md and docs/*.md works as written.

Each command runs as a subprocess from a fresh copy of the project in a tmp dir (where a user
types it: the project root, with `../shared/data` beside it), so a renamed key, group or target
breaks the build. The convention (also in docs/contributing.md, "Documenting commands"):

- Only ```bash blocks hold commands: one per line, `\\` continues a line, `#` starts a comment,
  `VAR=value` before the program sets the environment.
- A block is RUN, shrunk: `python train.py|eval.py|generate.py ...` gets the `SHRINK` overrides
  below appended (those whose key the composed config has and the command does not set itself),
  plus `paths.log_dir=<tmp>`; never `hydra.run.dir`, which would hide run-dir bugs. A run passes
  when it exits 0, leaves no `failed.json` (a multirun job that failed) and wrote its
  `metrics.json` (`samples.jsonl` for generate.py). `python -m lm_lab.report` runs as it is.
- `<!-- docs-test: compose: <why> -->` on the line before the fence marks a block that cannot run
  here (GPUs, clusters, W&B keys, hours): its commands are only COMPOSED: the Hydra mains with
  `--cfg job` (each value of a sweep at least once), other Python scripts with `--help` (every
  `--flag` of the command must be one of theirs), `python -m pytest` by its paths.
- `make <target>` is never run (it would build a venv): `make -n` must succeed, the target must be
  listed by `make help`, and the Python commands it expands to are composed as above.
- Placeholders are filled from runs this test makes itself (shared between commands, and with
  the documented commands that are spelt the same): see `PLACEHOLDERS`. Any other `<...>` fails.
- Commands that GPU/cluster launchers would run (torchrun, srun, `trainer=gpu|ddp|fsdp|multinode`,
  the SLURM launcher) must sit in a compose block; this test refuses them otherwise.

The commands run two at a time (`DOCS_TEST_WORKERS`), started when the first case asks.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_DATA = Path(os.environ.get("LM_LAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
MAINS = {"train.py", "eval.py", "generate.py"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(:.*)?-->$")
PLACEHOLDER = re.compile(r"<[a-z][^<>]*>|\bDIR\b")
MUST_COMPOSE = re.compile(
    r"^(\S+=\S+\s+)*(torchrun|srun)\b|hydra/launcher=submitit|\btrainer=(gpu|ddp|fsdp|multinode)\b"
)
NEEDS_SHARED = re.compile(
    r"data=(sst2|ag_news|tinyshakespeare)\b|shared/data|experiment=(shakespeare_char|finetune_compare)"
)
# Appended to every run of a Hydra main when the composed config has the key and the command
# does not set it: tiny model, two steps, a few batches, a few ICL queries and tokens.
SHRINK = (
    "model.d_model=16",
    "model.n_layers=1",
    "model.size=null",
    "data.batch_size=4",
    "data.max_length=32",
    "data.block_size=16",
    "data.train_windows_per_epoch=8",
    "data.eval_windows=4",
    "data.max_train_examples=64",
    "data.train_examples=32",
    "data.eval_examples=16",
    "trainer.max_epochs=1",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.val_check_interval=null",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "extras.print_config=false",
    "task.baseline.Cs=[1]",  # one TF-IDF + LR fit, not three: the baseline runs, in half the time
    "hydra.sweeper.n_trials=2",
    "icl.shots=[0,1]",
    "icl.seeds=1",
    "icl.max_queries=4",
    "icl.context=1024",  # rope reads past the 16-token blocks the tiny LM saw: SST-2 prompts fit
    "eval_lengths=[16,32]",
    "length.max_windows=2",
    "length.induction_sequences=2",
    "max_new_tokens=8",
    "sft.max_prompts=4",
    "sft.max_new_tokens=8",
)

# Placeholder -> (the documented train.py command whose run fills it, path inside that run).
# Spelt as in the docs, so the documented command and the placeholder share one run.
CLASSIFY_RUN = ("train.py", "model=transformer", "task=classify")
LM_RUN = ("train.py", "task=generate", "model=transformer")
SFT_RUN = (
    "train.py",
    "task=sft",
    "data=jsonl",
    "data.root=DIR",
    "tokenizer=char",
    "data.max_length=128",
)
PLACEHOLDERS: dict[str, tuple[tuple[str, ...], str]] = {
    "<run dir>": (CLASSIFY_RUN, ""),
    "<ckpt>": (CLASSIFY_RUN, "checkpoints/best.ckpt"),
    "<lm run dir>": (LM_RUN, ""),
    "<lm ckpt>": (LM_RUN, "checkpoints/best.ckpt"),
    "<bilstm lm ckpt>": (("train.py", "model=bilstm", "task=generate"), "checkpoints/best.ckpt"),
    "<lora run dir>": (("train.py", "task=classify", "init_from=<lm ckpt>", "finetune=lora"), ""),
    "<multirun dir>": (("train.py", "-m", "model=transformer,bilstm,hybrid", "task=classify"), ""),
    "<sft ckpt>": (SFT_RUN, "checkpoints/best.ckpt"),
    "<sft run dir>": (SFT_RUN, ""),
}
DATA_DIRS = {"csv": "data_csv", "jsonl": "data_jsonl", "text": "data_text", "hf": "data_csv"}
SFT_DIR = "data_sft"  # DIR of a task=sft command: conversations in each record format
PROMPTS_FILE = "ROMEO:\nJULIET:\n"  # prompts.txt, as generate.py's prompt_file example reads


@dataclass(frozen=True)
class Command:
    doc: str  # README.md or docs/<page>.md
    line: int  # where the command starts
    text: str  # the logical line, continuations joined
    compose: bool  # in a `docs-test: compose` block

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_commands(path: Path) -> list[Command]:
    """The commands of the ```bash blocks of one Markdown file, with their block's marker."""
    doc = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    commands, fence, compose, previous, pending = [], None, False, "", None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            if fence is None:
                fence, marker = line[3:].strip(), MARKER.match(previous)
                if marker and (marker["kind"] != "compose" or fence != "bash"):
                    raise ValueError(f"{doc}:{number - 1}: unknown docs-test marker {previous!r}")
                compose = bool(marker)
            else:
                fence = None
        elif fence == "bash" and line:
            start, text = pending or (number, "")
            piece = line.removesuffix("\\").strip()
            text = f"{text} {piece}" if text else piece
            pending = (start, text) if line.endswith("\\") else None
            if pending is None and not text.startswith("#"):
                commands.append(Command(doc, start, text, compose))
        if line:
            previous = line
    return commands


ALL_COMMANDS = [command for path in DOCS for command in parse_commands(path)]


def split(text: str) -> tuple[dict[str, str], list[str]]:
    """(environment prefix, argv) of a command as a POSIX shell splits it."""
    tokens = shlex.split(text, comments=True)
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    return env, tokens


def script_argv(argv: list[str]) -> tuple[str, list[str]]:
    """('train.py', its arguments) out of `python train.py ...`, `torchrun ... train.py ...`."""
    for i, token in enumerate(argv):
        if token.endswith(".py"):
            return token, argv[i + 1 :]
    if argv[:2] == ["python", "-m"]:
        return f"-m {argv[2]}", argv[3:]
    raise AssertionError(f"no Python script in {shlex.join(argv)}")


def sweep_variants(args: list[str]) -> tuple[list[str], list[list[str]]]:
    """(flags, override lists): the i-th list takes the i-th value of every sweep (cycling), so
    each value composes at least once; `-m` and other flags are kept apart."""
    flags = [a for a in args if a.startswith("-")]
    overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else None for o in overrides]
    n = max([len(v) for v in values if v] or [1])
    variants = [
        [
            f"{o.get_key_element()}={v[i % len(v)]}" if v else o.input_line
            for o, v in zip(overrides, values, strict=True)
        ]
        for i in range(n)
    ]
    return flags, variants


def has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def tail(proc: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-n:]}"


class Lab:
    """A fresh copy of the project in tmp, the runs that fill placeholders, and the checks."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cwd = tmp / "project"
        self.env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
        self.env["PYTHONPATH"] = str(self.cwd / "src")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self._done: dict[tuple[str, ...], Future] = {}  # runs and --help outputs, by argv
        self._lock = threading.Lock()
        self._copy_project()

    def _copy_project(self) -> None:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        files = listed.stdout.split() if listed.returncode == 0 else None
        if files is None:  # not a git checkout: everything but caches and outputs
            ignore = shutil.ignore_patterns(".venv", ".git", "logs", "__pycache__", ".*_cache")
            shutil.copytree(ROOT, self.cwd, ignore=ignore)
        for name in files or []:
            if (ROOT / name).is_file():
                (self.cwd / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, self.cwd / name)
        if SHARED_DATA.is_dir():
            (self.tmp / "shared").symlink_to(SHARED_DATA.parent, target_is_directory=True)
        (self.cwd / "prompts.txt").write_text(PROMPTS_FILE)
        self._write_data()

    def _write_data(self) -> None:
        """DIR for data=csv|jsonl|hf (two labels) and data=text."""
        words = [f"{a}{b}" for a in ("lo", "ra", "mi", "te") for b in ("n", "st", "v", "ke", "do")]
        rows = [  # 80 distinct texts: the last word tells rows i and i + 20 apart
            (
                " ".join([*(words[(i * 7 + j) % len(words)] for j in range(12)), words[i // 20]]),
                f"c{i % 2}",
            )
            for i in range(80)
        ]
        for split_name, part in (
            ("train", rows[:40]),
            ("validation", rows[40:60]),
            ("test", rows[60:]),
        ):
            csv_dir, jsonl_dir = self.tmp / DATA_DIRS["csv"], self.tmp / DATA_DIRS["jsonl"]
            csv_dir.mkdir(exist_ok=True)
            jsonl_dir.mkdir(exist_ok=True)
            (csv_dir / f"{split_name}.csv").write_text(
                "text,label\n" + "".join(f"{t},{label}\n" for t, label in part)
            )
            (jsonl_dir / f"{split_name}.jsonl").write_text(
                "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in part)
            )
        sft_dir = self.tmp / SFT_DIR
        sft_dir.mkdir(exist_ok=True)
        for split_name, first in (("train", 0), ("validation", 40), ("test", 50)):
            records = [
                [
                    {"prompt": f"add {i} and 1", "response": f"{i + 1}"},
                    {"instruction": "add", "input": f"{i} 2", "output": f"{i + 2}"},
                    {"messages": [{"role": "user", "content": f"add {i} and 3"},
                                  {"role": "assistant", "content": f"{i + 3}"}]},
                ][i % 3]
                for i in range(first, first + (40 if split_name == "train" else 10))
            ]  # fmt: skip
            (sft_dir / f"{split_name}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in records)
            )
        text_dir = self.tmp / DATA_DIRS["text"]
        text_dir.mkdir(exist_ok=True)
        for split_name, part in (("train", rows[:40]), ("validation", rows[40:60])):
            (text_dir / f"{split_name}.txt").write_text("\n".join(t for t, _ in part) + "\n")

    # ---- placeholders

    def fill(self, text: str) -> str:
        for name, (argv, inside) in PLACEHOLDERS.items():
            if name in text:
                text = text.replace(name, str(self.run_dir(argv) / inside).rstrip("/"))
        if re.search(r"\bDIR\b", text):
            choice = re.search(r"\bdata=(\w+)", text)
            folder = (
                DATA_DIRS[choice[1] if choice else "csv"] if "task=sft" not in text else SFT_DIR
            )
            text = re.sub(r"\bDIR\b", str(self.tmp / folder), text)
        left = PLACEHOLDER.findall(" ".join(shlex.split(text, comments=True)))
        assert not left, f"unknown placeholder {left}: use one of {[*PLACEHOLDERS, 'DIR']}"
        return text

    def run_dir(self, argv: tuple[str, ...]) -> Path:
        """The run (or multirun) dir of a placeholder's train.py command, run once."""
        command = self.fill(" ".join(argv))
        run = self.main_run(["python", *shlex.split(command)], {})
        assert run.error is None, f"`python {command}` (filling a placeholder) failed: {run.error}"
        return run.out

    # ---- Hydra mains

    def python(
        self, argv: list[str], env: dict[str, str], timeout: int = 900
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *argv[1:]] if argv[0] == "python" else argv,
            cwd=self.cwd,
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(
        self, script: str, args: list[str], env: dict[str, str], cfg: str = "job"
    ) -> list[dict]:
        """The composed configs of every sweep variant; AssertionError when one does not compose."""
        _, variants = sweep_variants(args)
        configs = []
        for overrides in variants:
            proc = self.python(["python", script, *overrides, "--cfg", cfg], env, timeout=120)
            assert proc.returncode == 0, (
                f"`{script} {shlex.join(overrides)} --cfg {cfg}`: {tail(proc)}"
            )
            configs.append(yaml.safe_load(proc.stdout) or {})
        return configs

    def once(self, key: tuple[str, ...], work: Callable[[], object]) -> object:
        """work() the first time `key` is asked for; later callers (any thread) get its result."""
        with self._lock:
            mine = key not in self._done
            future = self._done.setdefault(key, Future())
        if mine:
            try:
                future.set_result(work())
            except BaseException as err:  # handed to every caller
                future.set_exception(err)
        return future.result()

    def main_run(self, argv: list[str], env: dict[str, str]) -> "Run":
        """`python train.py ...` shrunk, logs in their own dir under tmp; one run per argv."""
        return self.once(tuple(argv), lambda: self._main_run(argv, env))

    def _main_run(self, argv: list[str], env: dict[str, str]) -> "Run":
        script, args = script_argv(argv)
        configs = self.compose(script, args, env, cfg="all")  # one per sweep variant
        given = {o.split("=", 1)[0].lstrip("+~") for o in args if "=" in o}
        keys = [o.split("=", 1)[0] for o in SHRINK]
        shrink = [
            o
            for o, key in zip(SHRINK, keys, strict=True)
            if key not in given and all(has_key(config, key) for config in configs)
        ]
        log_dir = self.tmp / "logs" / hashlib.sha1(shlex.join(argv).encode()).hexdigest()[:10]
        flags = [a for a in args if a.startswith("-")]
        overrides = [a for a in args if not a.startswith("-")]
        proc = self.python(
            ["python", script, *flags, *overrides, *shrink, f"paths.log_dir={log_dir}"], env
        )
        return Run.of(
            proc,
            script,
            log_dir,
            multirun=bool(flags) or configs[0].get("hydra", {}).get("mode") == "MULTIRUN",
        )

    # ---- dry checks

    def help_check(self, script: str, args: list[str], env: dict[str, str]) -> None:
        argv = ["python", *script.split(), "--help"]
        proc = self.once(tuple(argv), lambda: self.python(argv, env, timeout=300))  # torch: once
        assert proc.returncode == 0, f"`{shlex.join(argv)}`: {tail(proc)}"
        for flag in {a.split("=", 1)[0] for a in args if a.startswith("--")}:
            assert flag in proc.stdout, f"{script} has no option {flag}: {proc.stdout[-1500:]}"

    def make_check(self, argv: list[str], env: dict[str, str]) -> None:
        targets = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        listed = subprocess.run(["make", "help"], cwd=self.cwd, capture_output=True, text=True)
        for target in targets:
            assert re.search(rf"^\s*{re.escape(target)}\s", listed.stdout, re.M), (
                f"make has no target {target}"
            )
        proc = subprocess.run(
            ["make", "-n", *argv[1:]],
            cwd=self.cwd,
            env=self.env | env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"`make -n {shlex.join(argv[1:])}`: {tail(proc)}"
        for line in proc.stdout.splitlines():  # `.venv/bin/python train.py ...`, pip aside
            expanded = re.match(r"^(?:\S+=\S+\s+)*\S*bin/python (?!-m pip)(.*)$", line)
            if expanded:
                self.compose_check(Command("make -n", 0, f"python {expanded[1]}", compose=True))

    def compose_check(self, command: Command) -> None:
        env, argv = split(self.fill(command.text))
        if argv[0] == "make":
            return self.make_check(argv, env)
        script, args = script_argv(argv)
        if script in MAINS:
            self.compose(script, args, env)
        elif script == "-m pytest":
            for path in (a for a in args if not a.startswith("-")):
                assert (self.cwd / path).exists(), f"pytest path {path} does not exist"
        else:
            self.help_check(script, args, env)
        return None

    # ---- a documented command

    def check(self, command: Command) -> str | None:
        """None when the command works as documented, else what went wrong."""
        try:
            if command.compose or split(command.text)[1][0] == "make":
                self.compose_check(command)
                return None
            assert not MUST_COMPOSE.search(command.text), (
                "cannot run here: put it in a block marked <!-- docs-test: compose: <why> -->"
            )
            env, argv = split(self.fill(command.text))
            script, args = script_argv(argv)
            if script in MAINS:
                return self.main_run(argv, env).error
            if script == "-m lm_lab.report":
                proc = self.python(argv, env)
                assert proc.returncode == 0, tail(proc)
                return None
            raise AssertionError(f"no way to run {script} here: mark its block compose")
        except AssertionError as err:
            return str(err)


@dataclass
class Run:
    out: Path  # the run dir, or the multirun dir
    error: str | None  # None when it worked

    @classmethod
    def of(
        cls, proc: subprocess.CompletedProcess, script: str, log_dir: Path, multirun: bool
    ) -> "Run":
        kind = "multiruns" if multirun else "runs"
        dirs = sorted(log_dir.glob(f"*/{kind}/*"))
        out = dirs[-1] if dirs else log_dir
        expected = "samples.jsonl" if script == "generate.py" else "metrics.json"
        failed = sorted(log_dir.rglob("failed.json"))
        if proc.returncode != 0:
            return cls(out, tail(proc))
        if failed:
            return cls(out, f"a job failed: {failed[0].read_text()[:3000]}")
        if not list(log_dir.rglob(expected)):
            return cls(out, f"no {expected} under {log_dir}: {tail(proc)}")
        return cls(out, None)


def needs_shared_data(command: Command) -> bool:
    return not command.compose and bool(NEEDS_SHARED.search(command.text))


@pytest.fixture(scope="module")
def checked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """command -> its check's result; every selected command starts at once, two at a time."""
    lab = Lab(tmp_path_factory.mktemp("docs"))
    selected = [
        item.callspec.params["command"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    workers = int(os.environ.get("DOCS_TEST_WORKERS", "2"))
    with ThreadPoolExecutor(workers) as pool:
        futures = {
            c: pool.submit(lab.check, c)
            for c in selected
            if not (needs_shared_data(c) and not SHARED_DATA.is_dir())
        }
        yield lambda command: futures[command].result()
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("command", [pytest.param(c, id=c.id) for c in ALL_COMMANDS])
def test_documented_command_works(command: Command, checked: Callable) -> None:
    if needs_shared_data(command) and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    error = checked(command)
    assert error is None, f"{command.id}: `{command.text}`\n{error}"


def test_readme_is_a_front_door() -> None:
    """At most ~200 lines, the two set-up commands on the first screen, every docs page linked."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first_screen = "\n".join(readme.splitlines()[:30])
    assert "make train" in first_screen and "make test" in first_screen
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md links nowhere to docs/{page.name}"


def test_the_parser_sees_markers_continuations_and_comments(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npython train.py a=1 \\\n  b=2   # note\n# a comment\n```\n\n"
        "<!-- docs-test: compose: why -->\n```bash\nmake sweep\n```\n```text\nnot a command\n```\n"
    )
    found = [(c.line, c.text, c.compose) for c in parse_commands(page)]
    assert found == [(2, "python train.py a=1 b=2   # note", False), (9, "make sweep", True)]
    assert split("OMP_NUM_THREADS=1 python train.py x=1  # c") == (
        {"OMP_NUM_THREADS": "1"},
        ["python", "train.py", "x=1"],
    )
    page.write_text("<!-- docs-test: run-later -->\n```bash\nmake x\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        parse_commands(page)
