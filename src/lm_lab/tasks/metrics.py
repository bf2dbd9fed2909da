"""What each task logs as `val/<name>` and `test/<name>`, in a module without Lightning: the
task classes take their METRICS from here, and `cli.validate` checks `task.monitor` against
them before Lightning (~4 s of imports) loads."""

METRICS = {
    "classify": ("loss", "acc", "f1"),
    "generate": ("loss", "acc", "ppl", "bpc"),
    "sft": ("loss", "acc", "ppl"),  # over the replies' tokens only
}
LANGUAGE_MODELS = ("generate", "sft")  # tasks whose checkpoint is a LanguageModel: it generates
