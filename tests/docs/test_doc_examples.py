"""Every shell example of README.md and docs/*.md runs (scaled down) or says why it cannot run here.

How examples are found, the markers (`<!-- not-run: REASON -->`,
`<!-- background: TEXT -->`) and the substitutions that scale them down are
in tests/docs/examples.py; docs/architecture.md ("Examples in the docs are
tests") says how to mark a new one.
"""

from __future__ import annotations

import sys

import pytest

from tests.docs.examples import DOCUMENTS, ROOT, SUBSTITUTIONS, DocumentRun, environment, install_commands, \
    make_givens, scaled, shell_blocks, split_commands


def _id(document) -> str:
    return str(document.relative_to(ROOT))


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    install_commands(bin_dir, sys.executable)
    return bin_dir


@pytest.fixture(scope="module")
def givens(tmp_path_factory, commands):
    pytest.importorskip("torch")   # the transfer examples train models
    return make_givens(tmp_path_factory.mktemp("givens"), environment(commands))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if shell_blocks(d)], ids=_id)
def test_the_shell_examples_of(document, tmp_path, commands, givens):
    bin_dir = commands
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".venv").mkdir()
    (workdir / ".venv" / "bin").symlink_to(bin_dir)
    run = DocumentRun(workdir, environment(bin_dir), givens)
    problems = []
    try:
        for block in shell_blocks(document):
            if not block.not_run:
                problems += run.run_block(block)
    finally:
        problems += run.stop_servers()
    assert not problems, "\n".join(problems)


def test_every_shell_block_is_run_or_says_why_not():
    """A block marked not-run names its reason; every other block has at least one command."""
    for document in DOCUMENTS:
        for block in shell_blocks(document):
            assert block.not_run is None or len(block.not_run) > 10, f"{block.where}: give the reason"
            assert block.not_run or block.commands, f"{block.where}: no command in the block"


def test_the_substitutions_scale_a_command_down():
    ports = {5557: 15557, 5558: 15558, 5559: 15559}
    assert scaled("libs-sim generate --shape 560x560 --step-um 40 --out map.h5", ports) == \
        "libs-sim generate --shape 12x12 --step-um 40 --out map.h5"
    assert scaled("libs-transfer train t.h5 --val v.h5 --out model/ [--max-epochs N] [--config my.toml]", ports) == \
        "libs-transfer train t.h5 --val v.h5 --out model/ --config small.toml --max-epochs 1"
    assert scaled("libs-stream control stats", ports) == "libs-stream control stats --control tcp://127.0.0.1:15559"
    assert "--live tcp://127.0.0.1:15557" in scaled("libs-acquire map --sim --out m.h5 --live tcp://127.0.0.1:5557", ports)
    assert all(len(row) == 3 and row[2] for row in SUBSTITUTIONS)


def test_commands_are_split_with_continuations_and_without_comments():
    body = "libs-stream serve --model m.onnx \\\n    --input tcp://0.0.0.0:5557   # the worker\n# a comment\n\n$ libs-stream control ping\n"
    assert split_commands(body) == ["libs-stream serve --model m.onnx      --input tcp://0.0.0.0:5557",
                                    "libs-stream control ping"]
