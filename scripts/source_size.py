"""How much source `src/difflm` holds at each git revision: statements (AST) and physical lines.

    .venv/bin/python scripts/source_size.py 44b0fdd 044b429 HEAD

Statements are counted by `ast` (every `ast.stmt` node, nested ones included), so they do not
move when the formatter wraps a line; physical lines do. Prints JSON, then a markdown table.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess

PACKAGE = "src/difflm"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def size(revision: str) -> dict[str, int | str]:
    """Files, statements and lines of the package's .py files at `revision`."""
    files = [path for path in git("ls-tree", "-r", "--name-only", revision, PACKAGE).split() if path.endswith(".py")]
    statements = lines = 0
    for path in files:
        text = git("show", f"{revision}:{path}")
        statements += sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(text)))
        lines += len(text.splitlines())
    return {"revision": revision, "files": len(files), "statements": statements, "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", default=["HEAD"], help="git revisions (default HEAD)")
    rows = [size(revision) for revision in parser.parse_args().revisions]
    print(json.dumps(rows, indent=1))
    print("\n| revision | files | statements | lines |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['revision']} | {row['files']} | {row['statements']} | {row['lines']} |")


if __name__ == "__main__":
    main()
