"""Collects the documentation of the installed Python standard library, labelled by module family.

The built-in corpus needs no download: every Python ships docstrings for its modules, classes,
functions and methods, and `pydoc_data.topics` holds the language reference's help topics.
`collect_in_subprocess` runs this file as a script in a fresh, isolated interpreter (`python -I`),
so the imports it needs leave nothing behind in the caller: no modules, atexit hooks, warnings
filters or printed output. It therefore imports the standard library only.

Labels come from the fixed mapping `FAMILIES` (module -> family, by top-level package; loosely
the chapters of the Python Library Reference). Submodules inherit their package's family.
Modules not in the mapping are never imported, and pydoc topics carry no label (label None): they
feed language modelling only.
"""

import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

FAMILIES: dict[str, tuple[str, ...]] = {
    "text": (  # string processing and markup
        "re", "string", "textwrap", "difflib", "unicodedata", "codecs", "stringprep", "locale",
        "gettext", "shlex", "reprlib", "pprint", "html", "xml",
    ),
    "network": (  # sockets, internet protocols, web servers and clients
        "socket", "ssl", "select", "selectors", "http", "urllib", "smtplib", "ftplib", "poplib",
        "imaplib", "nntplib", "telnetlib", "socketserver", "xmlrpc", "wsgiref", "ipaddress",
        "webbrowser", "smtpd", "asynchat", "asyncore", "cgi", "uuid",
    ),
    "concurrency": (  # threads, processes, event loops, scheduling
        "threading", "multiprocessing", "asyncio", "concurrent", "queue", "subprocess", "sched",
        "signal", "contextvars",
    ),
    "files": (  # paths, file systems, streams, archives, compression
        "os", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "io", "zipfile", "tarfile",
        "gzip", "bz2", "lzma", "zlib", "filecmp", "fileinput", "stat", "posixpath", "genericpath",
        "mmap", "fcntl", "linecache", "zipapp",
    ),
    "data": (  # serialisation, file formats, persistence, encodings, hashing, mail messages
        "json", "csv", "pickle", "pickletools", "copyreg", "sqlite3", "configparser", "struct",
        "marshal", "plistlib", "tomllib", "shelve", "dbm", "base64", "binascii", "quopri", "uu",
        "email", "mailbox", "mimetypes", "netrc", "xdrlib", "array", "hashlib", "hmac",
    ),
    "numeric": (  # numbers, randomness, dates and times
        "math", "cmath", "decimal", "fractions", "random", "statistics", "numbers", "secrets",
        "bisect", "heapq", "colorsys", "datetime", "time", "calendar", "zoneinfo",
    ),
    "devtools": (  # testing, debugging, profiling, logging, command lines
        "unittest", "doctest", "pdb", "bdb", "logging", "traceback", "tracemalloc", "trace",
        "timeit", "profile", "cProfile", "pstats", "warnings", "faulthandler", "argparse",
        "optparse", "getopt",
    ),
    "language": (  # Python's own machinery: parsing, bytecode, introspection, imports
        "inspect", "dis", "ast", "pydoc", "code", "codeop", "compileall", "py_compile",
        "symtable", "tokenize", "token", "keyword", "tabnanny", "pyclbr", "importlib", "pkgutil",
        "modulefinder", "runpy", "zipimport",
    ),
    "types": (  # built-in and generic types, containers, functional tools
        "builtins", "collections", "enum", "dataclasses", "typing", "abc", "types", "functools",
        "itertools", "operator", "copy", "weakref", "contextlib", "graphlib",
    ),
}  # fmt: skip
MODULE_FAMILY = {module: family for family, modules in FAMILIES.items() for module in modules}
C_ACCELERATORS = {"posix": "os", "thread": "threading"}  # __module__ of C parts, "_" stripped
SKIPPED_SUBMODULES = ("test", "tests", "idle_test")  # plus anything starting with "_"
TOPICS_ORIGIN = "pydoc_data.topics"

Record = tuple[str, str, str | None]  # (origin, text, family or None)


def family_of(module_name: str) -> str | None:
    return MODULE_FAMILY.get(module_name.split(".")[0])


def quiet_import(name: str) -> ModuleType | None:
    """Import with output and warnings swallowed; a module that fails (wrong OS, missing C
    library, deprecated) is simply skipped."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(sink):
            try:
                return importlib.import_module(name)
            except BaseException:  # SystemExit, ImportError, OSError...
                return None


def walk_modules(name: str) -> Iterator[ModuleType]:
    """The module and, for a package, its public submodules, depth first, in name order."""
    module = quiet_import(name)
    if module is None:
        return
    yield module
    found = sorted(info.name for info in pkgutil.iter_modules(getattr(module, "__path__", [])))
    for sub in found:
        if not sub.startswith("_") and sub not in SKIPPED_SUBMODULES and "test" not in sub:
            yield from walk_modules(f"{name}.{sub}")


def own_doc(obj: Any) -> str | None:
    """The object's own docstring, cleaned; unlike inspect.getdoc it never falls back to a base
    class, whose text may belong to another family (and would only repeat)."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


def defined_in(obj: Any, package: str) -> bool:
    """True when `obj` belongs to `package` (or its C accelerator, e.g. _socket for socket), so
    re-exported names are labelled by the module that defines them."""
    top = str(getattr(obj, "__module__", None) or "").split(".")[0].lstrip("_")
    return C_ACCELERATORS.get(top, top) == package


def class_docs(cls: type, origin: str) -> Iterator[tuple[str, str | None]]:
    yield origin, own_doc(cls)
    for name, member in sorted(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if inspect.isroutine(member) or isinstance(member, property):
            yield f"{origin}.{name}", own_doc(member)


def module_docs(module: ModuleType) -> Iterator[tuple[str, str | None]]:
    """(origin, docstring) for the module and the public classes, functions and methods it
    defines."""
    package = module.__name__.split(".")[0]
    yield module.__name__, own_doc(module)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not defined_in(obj, package):
            continue
        origin = f"{module.__name__}.{name}"
        if inspect.isclass(obj):
            yield from class_docs(obj, origin)
        elif inspect.isroutine(obj):
            yield origin, own_doc(obj)


def is_signature_only(origin: str, text: str) -> bool:
    """Auto-generated one-liners such as dataclass reprs: 'Point(x: int, y: int)'."""
    return "\n" not in text and text.startswith(origin.rsplit(".", 1)[-1] + "(")


def labelled_docstrings(min_chars: int) -> list[Record]:
    records = []
    for name in sorted(set(MODULE_FAMILY) & set(sys.stdlib_module_names)):
        for module in walk_modules(name):
            try:
                docs = list(module_docs(module))
            except Exception:  # odd attributes on an exotic module: skip it
                continue
            for origin, text in docs:
                if text and len(text) >= min_chars and not is_signature_only(origin, text):
                    records.append((origin, text, MODULE_FAMILY[name]))
    return records


def pydoc_topics(min_chars: int) -> list[Record]:
    module = quiet_import(TOPICS_ORIGIN)
    topics: dict[str, str] = getattr(module, "topics", {})
    return [
        (f"{TOPICS_ORIGIN}:{key}", topics[key].strip(), None)
        for key in sorted(topics)
        if len(topics[key].strip()) >= min_chars
    ]


def deduplicate(records: list[Record]) -> list[Record]:
    """One record per text, first origin kept; a text seen under two families is dropped, since
    no label would be right for it."""
    families: dict[str, set[str | None]] = {}
    for _, text, family in records:
        families.setdefault(text, set()).add(family)
    seen: set[str] = set()
    unique = []
    for record in records:
        text = record[1]
        if text not in seen and len(families[text]) == 1:
            seen.add(text)
            unique.append(record)
    return unique


def collect(min_chars: int = 40) -> list[Record]:
    """All records, in a fixed order (module name, then member name, then topics)."""
    return deduplicate(labelled_docstrings(min_chars) + pydoc_topics(min_chars))


def collect_in_subprocess(min_chars: int = 40, timeout_s: float = 600) -> list[Record]:
    """`collect` in a fresh isolated interpreter, so its imports have no side effects here."""
    with tempfile.TemporaryDirectory(prefix="lm_lab_pydoc_") as tmp:
        out = Path(tmp) / "records.json"
        cmd = [sys.executable, "-I", str(Path(__file__).resolve()), str(out), str(min_chars)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"collecting stdlib docstrings failed: {tail[0]}")
        return [tuple(r) for r in json.loads(out.read_text(encoding="utf-8"))]


def _main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")  # deprecated attributes (typing.io ...) warn when read
    out, min_chars = Path(argv[1]), int(argv[2])
    records = collect(min_chars)
    out.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    _main(sys.argv)
