"""Every code block of README.md and docs/**/*.md runs as a test (Sybil), so an example cannot rot.

How a block is treated, by its fence and the HTML comment (invisible on the site) just above it:

- ```python: run; the blocks of one page share one namespace, in order (a page loads its model once);
- ```bash / ```sh: run as one `bash -e -o pipefail` script; `bertkit` is the venv's;
- ```text, ```console or a bare ```: an output sample or a file's contents, never run;
- `<!-- docs: server -->` before a block: run against one `bertkit serve` (the packaged model) started for
  the test session on a free loopback port: `localhost:8000` / `127.0.0.1:8000` in the block become its
  address, and `curl -s` becomes `curl -sS --fail-with-body`, so an error answer fails the test;
- `<!-- docs: check "why it is not run" -->` before a block: not run (it trains for minutes, needs a cluster,
  a hub download or files of the reader's own), but checked: each `bertkit ...` command and each of its
  options must exist in the Typer app (a renamed option fails), and Python must compile;
- `<!-- skip: next "why" -->` (Sybil's own): neither run nor checked; pytest reports the reason.

Each page runs in its own scratch folder, beside a `shared` link to the data sets, so `../shared/data/...`
reads them as it does from the repository root; the small input files the examples name (texts.txt, ...)
are written there first (`FILES`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"  # the data sets sit beside the repository (as in tests/conftest.py)
BLOCK_TIMEOUT_S = 300
ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):8000\b")
NEXT = "_docs_next"  # the namespace key a `<!-- docs: ... -->` directive leaves for the next block
NO_DATA = "_docs_no_data"  # set once a page's block needed the absent data sets: its later blocks build on it

# The inputs the examples name, written into each page's scratch folder.
FILES = {
    "texts.txt": "A man plays guitar.\nSomeone plays music.\nThe stock market fell sharply today.\n"
                 "A cat is sitting on a rug.\nOil prices rose after OPEC cut its output.\n",
}


# ----------------------------------------------------------------------------------------------------------
# The page's scratch folder and the shared server


@contextmanager
def in_folder(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def setup_page(namespace: dict[str, Any]) -> None:
    top = Path(tempfile.mkdtemp(prefix="bertkit-docs-"))
    if SHARED.is_dir():
        (top / "shared").symlink_to(SHARED)
    work = top / "work"
    work.mkdir()
    for name, text in FILES.items():
        (work / name).write_text(text, encoding="utf-8")
    namespace["_docs_scratch"] = work


def teardown_page(namespace: dict[str, Any]) -> None:
    shutil.rmtree(namespace["_docs_scratch"].parent, ignore_errors=True)


class LazyServer:
    """`bertkit serve` on a free loopback port, started when a block first asks for it, stopped at the end."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> str:
        if self.proc is None:
            import socket
            import time

            import httpx

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.log = tempfile.TemporaryFile()  # noqa: SIM115  (open for the server's life, closed in stop)
            self.proc = subprocess.Popen([sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=self.log, env=block_env())
            self.address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"http://{self.address}/health", timeout=1).status_code == 200:
                        return self.address
                except httpx.TransportError:
                    time.sleep(0.2)
            self.log.seek(0)
            raise RuntimeError(f"the docs' server did not start: {self.log.read().decode()[-2000:]}")
        return self.address

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        if self.proc is not None:
            self.log.close()


@pytest.fixture(scope="session")
def docs_server():
    server = LazyServer()
    yield server
    server.stop()


def block_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200"}


# ----------------------------------------------------------------------------------------------------------
# Directives and evaluators


def directive(example: Example) -> None:
    """`<!-- docs: server -->` or `<!-- docs: check "reason" -->`: how the next block is treated."""
    mode = example.parsed.split(None, 1)[0]
    if mode not in ("server", "check"):
        raise ValueError(f"unknown docs directive {example.parsed!r}: use 'server' or 'check \"reason\"'")
    example.namespace[NEXT] = mode


class DirectiveParser:
    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="docs", arguments=".+?")

    def __call__(self, document):
        for region in self.lexer(document):
            region.parsed = region.lexemes["arguments"]
            region.evaluator = directive
            yield region


def with_server(source: str, example: Example) -> str:
    address = example.namespace["docs_server"].start()
    source = ADDRESS.sub(address, source)
    return re.sub(r"\bcurl -s\b", "curl -sS --fail-with-body", source)


def needs_data(example: Example, source: str) -> None:
    """Skip, with the reason, a block that reads ../shared/data when the data sets are absent (CI has them), and
    every later block of its page, which may use what it made."""
    if SHARED.is_dir():
        return
    if "shared/data" in source or example.namespace.get(NO_DATA):
        example.namespace[NO_DATA] = True
        pytest.skip(f"needs the data sets in {SHARED / 'data'}, absent here (or an earlier block of this page did)")


def run_python(example: Example) -> None:
    __tracebackhide__ = True
    mode = example.namespace.pop(NEXT, "run")
    source = str(example.parsed)
    if mode == "server":
        source = with_server(source, example)
    code = compile(pad(source, example.line + example.parsed.line_offset), example.path, "exec")
    if mode == "check":
        return
    needs_data(example, source)
    with in_folder(example.namespace["_docs_scratch"]):
        exec(code, example.namespace)  # noqa: S102  (running the docs' examples is the point)
    example.namespace.pop("__builtins__", None)


def run_bash(example: Example) -> None:
    __tracebackhide__ = True
    mode = example.namespace.pop(NEXT, "run")
    source = str(example.parsed)
    if mode == "check":
        check_commands(source)
        return
    needs_data(example, source)
    if mode == "server":
        source = with_server(source, example)
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", source], cwd=example.namespace["_docs_scratch"],
                       env=block_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, check=False)
    if r.returncode != 0:
        raise AssertionError(f"shell block at line {example.line} exited {r.returncode}:\n{source}\n"
                             f"--- stderr ---\n{r.stderr[-3000:]}\n--- stdout ---\n{r.stdout[-1500:]}")


# ----------------------------------------------------------------------------------------------------------
# Checking a command against the Typer app without running it


def commands(source: str) -> list[list[str]]:
    """The shell commands of one line as token lists (comments dropped, split at pipes, `;` and `&&`)."""
    lexer = shlex.shlex(source, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    found: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set(";&|") or token == "\n":
            found.append([])
        else:
            found[-1].append(token)
    return [c for c in found if c]


def check_commands(source: str) -> None:
    """Every `bertkit` command of the block names a real command, and every option it gives exists."""
    import typer

    from bertkit.cli.entry import app

    root = typer.main.get_command(app)
    for line in source.replace("\\\n", " ").splitlines():  # continuation lines joined
        for tokens in commands(line):
            if tokens[0] != "bertkit":
                continue
            command, path = root, ["bertkit"]
            rest = tokens[1:]
            # typer carries its own copy of click: a group is whatever has `commands`
            while getattr(command, "commands", None) and rest and not rest[0].startswith("-"):
                sub = command.commands.get(rest[0])
                assert sub is not None, f"`{' '.join(path)} {rest[0]}`: no such command ({line.strip()})"
                command, path, rest = sub, [*path, rest[0]], rest[1:]
            known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            for token in rest:
                if token.startswith("-") and token != "-" and not re.fullmatch(r"-[\d.]+", token):
                    name = token.split("=", 1)[0]
                    assert name in known, f"`{' '.join(path)}` has no option {name} ({line.strip()})"


def collector():
    """The pytest_collect_file hook for the root conftest.py."""
    return Sybil(
        parsers=[SkipParser(), DirectiveParser(), CodeBlockParser("python", run_python),
                 CodeBlockParser("bash", run_bash), CodeBlockParser("sh", run_bash)],
        patterns=["README.md", "docs/*.md", "docs/*/*.md"],
        # RESULTS.md is the measurement log: its commands are the benchmark runs behind its numbers (minutes
        # to hours each, some on other machines); docs/report/ is generated by `bertkit report`.
        excludes=["RESULTS.md", "report/*.md"],
        setup=setup_page,
        teardown=teardown_page,
        fixtures=["docs_server"],
        path=str(ROOT),
    ).pytest()
