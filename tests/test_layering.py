"""The layering contracts of pyproject.toml ([tool.importlinter]) hold for the code as it is.

docs/architecture.md ("Layering") states them; `lint-imports` checks the same from a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_LINTER = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint(config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", RUN_LINTER, "--config", str(config), "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_layering_contract_is_kept():
    result = lint(ROOT / "pyproject.toml")
    assert result.returncode == 0, f"broken layering contract(s):\n{result.stdout}\n{result.stderr}"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_a_broken_contract_is_reported(tmp_path):
    # acquisition does import drivers, so this contract must come out broken: the linter sees the code.
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["acquisition", "drivers"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "acquisition without drivers"\n'
                      'type = "forbidden"\nsource_modules = ["acquisition"]\nforbidden_modules = ["drivers"]\n')
    result = lint(config)
    assert result.returncode != 0
    assert "acquisition without drivers BROKEN" in result.stdout
    assert "acquisition.instruments -> drivers" in result.stdout


def test_the_store_imports_only_h5py_and_numpy():
    # docs/store.md: every package imports the store; scipy (the baseline's) or torch would make
    # each of them slow to start, or impossible on the lab PC.
    script = ("import sys, acquisition.store; "
              "print(sorted(m for m in ('scipy', 'sklearn', 'torch', 'onnxruntime', 'zmq') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
