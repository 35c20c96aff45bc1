"""docs/architecture.md lists the interfaces the packages use; every name it lists must exist.

The page's ```python blocks are read the way a person reads them: a comment line naming a
module (``# transfer/preprocess.py``), or else the section heading's `package/`, says where
the names of the following lines live. Every line that starts at the left margin names one
thing per ``;``-separated part: ``class Name``, ``def name``, ``Name(...)``, ``Name = ...``,
``Name: ...``, ``Name.attribute`` or a dotted ``package.module.Name``; ``from m import a, b``
names a and b of m. Each must import, each ``Name.attribute`` must exist, and each keyword
argument written directly in ``Name(...)`` must be a parameter of it. A renamed or removed
name, or a stale keyword, fails here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
PACKAGES = ("acquisition", "drivers", "sim", "streaming", "transfer")
# modules that need the `train` extra (torch, onnx); skipped where it is not installed
NEEDS = {"transfer.models": "torch", "transfer.bundle": "torch", "transfer.predict": "torch",
         "transfer.export": "torch", "transfer.onnx_graph": "onnx", "streaming.testing": "onnx"}

MODULE_COMMENT = re.compile(r"^#\s+((?:%s)/[\w/]*?)(?:\.py)?(?:\s|$|\()" % "|".join(PACKAGES))
HEADING_MODULE = re.compile(r"`((?:%s)/[\w/]*?)(?:\.py)?/?`" % "|".join(PACKAGES))
IMPORT_LINE = re.compile(r"^from\s+([\w.]+)\s+import\s+(.+)$")
LEADING = re.compile(r"^(?:class\s+|def\s+|@)?([A-Za-z_][\w.]*)")


def dotted(path: str) -> str:
    return path.strip("/").replace("/", ".")


def strip_comment(line: str) -> str:
    depth_quote = None
    for i, ch in enumerate(line):
        if ch in "\"'" and depth_quote in (None, ch):
            depth_quote = None if depth_quote else ch
        elif ch == "#" and depth_quote is None:
            return line[:i]
    return line


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def direct_keywords(segment: str, name_end: int) -> list[str]:
    """Keyword arguments at the first bracket level of the call that starts at `name_end`."""
    if name_end >= len(segment) or segment[name_end] != "(":
        return []
    keywords, depth, quote, token = [], 0, None, ""
    for ch in segment[name_end:]:
        if quote:
            quote = None if ch == quote else quote
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
            token = ""
            continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1:
            if ch == "=" and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", token):
                keywords.append(token.strip())
            token = "" if ch in ",=*|:" else token + ch
    return keywords


def listed_names() -> list[tuple[str, str, str, list[str], int]]:
    """(module, name, attribute path, keywords, line number) for every name the page lists."""
    found = []
    section_module = None
    in_python = False
    module = None
    for number, raw in enumerate(PAGE.read_text("utf-8").splitlines(), 1):
        if raw.startswith("## "):
            match = HEADING_MODULE.search(raw)
            section_module = dotted(match.group(1)) if match else None
            continue
        if raw.startswith("```"):
            in_python = raw.strip() == "```python" and not in_python
            module = section_module
            continue
        if not in_python or not raw or raw[0].isspace():
            continue
        comment = MODULE_COMMENT.match(raw)
        if comment:
            module = dotted(comment.group(1))
            continue
        if raw.startswith("#"):
            continue
        code = strip_comment(raw).strip()
        imported = IMPORT_LINE.match(code)
        if imported:
            for name in imported.group(2).split(","):
                found.append((imported.group(1), name.strip(), "", [], number))
            continue
        for segment in split_top_level(code, ";"):
            match = LEADING.match(segment)
            if not match or segment.startswith("@"):
                continue
            chain = match.group(1).split(".")
            keywords = direct_keywords(segment, match.end())
            if chain[0] in PACKAGES:         # package.module.Name
                for cut in range(len(chain) - 1, 0, -1):
                    try:
                        importlib.util.find_spec(".".join(chain[:cut]))
                    except ModuleNotFoundError:
                        continue
                    found.append((".".join(chain[:cut]), chain[cut], ".".join(chain[cut + 1:]), keywords, number))
                    break
                continue
            found.append((module, chain[0], ".".join(chain[1:]), keywords, number))
    return found


NAMES = listed_names()


def test_the_page_lists_names_from_every_package():
    modules = {module.split(".")[0] for module, *_ in NAMES if module}
    assert modules == set(PACKAGES)
    assert len(NAMES) > 80


@pytest.mark.parametrize("module, name, attribute, keywords, line", NAMES,
                         ids=[f"{m}.{n}{'.' + a if a else ''}" for m, n, a, _, _ in NAMES])
def test_every_listed_name_exists(module, name, attribute, keywords, line):
    assert module, f"docs/architecture.md:{line}: {name} is listed outside any module (add '# package/module.py')"
    if module in NEEDS:
        pytest.importorskip(NEEDS[module])
    imported = importlib.import_module(module)
    assert hasattr(imported, name), f"docs/architecture.md:{line}: {module} has no {name}"
    obj = getattr(imported, name)
    for part in filter(None, attribute.split(".")):
        assert hasattr(obj, part), f"docs/architecture.md:{line}: {module}.{name} has no {attribute}"
        obj = getattr(obj, part)
    if keywords and callable(obj):
        parameters = inspect.signature(obj).parameters
        stale = [k for k in keywords if k not in parameters]
        assert not stale, (f"docs/architecture.md:{line}: {module}.{name}{'.' + attribute if attribute else ''} "
                           f"has no parameter(s) {stale}; it takes {list(parameters)}")
