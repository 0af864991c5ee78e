"""The README and docs/ against the code: links resolve, command lines parse through the real parser,
Python examples import only what exists and use no name they do not define, and the options table
is the one generated from options.py."""
from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

from order_embedding import options
from order_embedding.cli import EPILOG, build_parser
from order_embedding.cli.help import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "tests" / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: Tokens that mark a command line as a template rather than a command: an ellipsis, an optional
#: part in brackets, a <placeholder> or a metavar-style one in capitals (COMMAND, RUN_DIR).
TEMPLATE = re.compile(r"\.\.\.|^\[|\]$|^<.*>$|^[A-Z][A-Z_]+$")


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced code block of a page."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


def prose(page: Path) -> str:
    """A page without its fenced code blocks (links and headings inside code are not links or headings)."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose(page), re.M)}


def command_lines(text: str) -> list[str]:
    """The ``order-embedding`` command lines of a shell block, continuation lines joined; lines that run
    the package under torchrun (``-m order_embedding``) count, from their subcommand on."""
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("order-embedding ") and not line.split()[1].endswith(":"):  # not a message it printed
            lines.append(line)
        elif " -m order_embedding " in line:
            lines.append("order-embedding " + line.split(" -m order_embedding ", 1)[1])
    return lines


def all_command_lines() -> list[tuple[str, str]]:
    found = [(rel(page), line) for page in PAGES for lang, text in code_blocks(page) if lang in ("", "sh", "bash", "console")
             for line in command_lines(text)]
    found += [(f"order-embedding {name.replace('_', '-')} --help", e) for name, h in COMMANDS.items() for e in h.examples]
    found += [("order-embedding --help", line) for line in command_lines(EPILOG)]
    return found


def parse(line: str) -> str | None:
    """None when ``line`` parses through the real parser, else argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(shlex.split(line, comments=True)[1:])
    except SystemExit as e:  # --help and --version exit with 0 after printing
        return None if e.code == 0 else err.getvalue().strip() or f"exit {e.code}"
    return None


def test_pages_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "install.md", "training.md", "evaluation.md", "api.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {rel(dest)}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_command_lines_parse():
    lines = all_command_lines()
    runnable = [(where, line) for where, line in lines if not any(TEMPLATE.search(t) for t in shlex.split(line, comments=True))]
    assert len(runnable) >= 30  # the docs show many commands; a broken extraction must not pass quietly
    failures = [f"{where}: {line}\n    {message}" for where, line in runnable if (message := parse(line))]
    assert not failures, "command lines that do not parse:\n" + "\n".join(failures)


def test_templates_are_told_from_commands():
    assert all(any(TEMPLATE.search(t) for t in shlex.split(line)) for line in (
        "order-embedding COMMAND --help", "order-embedding train --data coco ...", "order-embedding demo [--quick]"))
    assert not any(TEMPLATE.search(t) for t in shlex.split("order-embedding evaluate runs/order --data data/coco --full"))


def test_a_wrong_command_line_is_caught():
    assert parse("order-embedding evaluate runs/order --no-such-flag") is not None
    assert parse("order-embedding train --method triangle") is not None
    assert parse("order-embedding evaluate runs/order --full") is None


def bound_and_loaded(tree: ast.AST) -> tuple[set[str], set[str]]:
    """The names a block defines (imports, assignments, functions, arguments) and the names it reads."""
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else loaded).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, loaded


def python_blocks() -> list[tuple[str, str]]:
    return [(rel(page), text) for page in PAGES for lang, text in code_blocks(page) if lang == "python"]


def test_python_blocks_exist():
    assert len(python_blocks()) >= 8


@pytest.mark.parametrize("where,text", python_blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_python_block_imports_exist_and_names_are_defined(where, text):
    tree = ast.parse(text)  # a block that is not Python fails here
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "order_embedding":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{where}: {node.module} has no {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "order_embedding":
                    importlib.import_module(alias.name)
    bound, loaded = bound_and_loaded(tree)
    undefined = loaded - bound - set(dir(builtins))
    assert not undefined, f"{where}: the block uses {sorted(undefined)} without defining or importing them"


def test_the_undefined_name_check_catches_a_missing_import():
    bound, loaded = bound_and_loaded(ast.parse("from order_embedding import load_model\nm = load_model('r')\norder_errors(m, m)"))
    assert loaded - bound - set(dir(builtins)) == {"order_errors"}


def test_options_table_is_the_declaration():
    assert options.markdown_table() in (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    for o in options.OPTIONS:  # every option has a one-line description
        assert o.help and "\n" not in o.help and o.name in options.DEFAULTS


def test_every_command_has_a_description_and_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        assert sub.description and sub.epilog and f"order-embedding {name}" in sub.epilog, name


def architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_architecture_layers_are_the_checked_layers():
    from test_layout import LAYERS

    section = architecture().split("## Layers", 1)[1].split("\n## ", 1)[0]
    listed = [tuple(re.findall(r"`([^`]+)`", line)) for line in re.findall(r"^\d+\. (.+)$", section, re.M)]
    assert listed == list(LAYERS)


def test_architecture_table_names_every_module_and_only_modules():
    package = ROOT / "src" / "order_embedding"
    table = architecture().split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = {m.rstrip("/") for m in re.findall(r"^\| (.+?) \|", table, re.M) for m in re.findall(r"`([\w./]+)`", m)}
    modules = {p.name for p in package.iterdir() if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p.is_dir() and (p / "__init__.py").exists())}
    assert {n for n in named if "/" not in n} == modules
