"""The shell examples of README.md and docs/*.md, scaled down and run as a user types them.

Which blocks are examples: fenced blocks tagged ``sh``, ``bash``, ``shell`` or
``console``, and untagged blocks whose first command is one of ours
(``libs-*``, ``python``, ``.venv/bin/python``, ``make``, ``pytest``).

Markers, an HTML comment on the line right above the block's fence:

- ``<!-- not-run: REASON -->``: the block is not run here, for REASON (real
  instruments, the paper's data, hours of training, another host);
- ``<!-- background: TEXT -->``: every command of the block is a server,
  started in the background and stopped (SIGINT) at the end of the document;
  the next block starts once TEXT has appeared in the server's output (give
  just ``<!-- background -->`` for no wait).

Some servers are known without a marker (:func:`server_ready_text`):
``libs-stream serve``, ``libs-stream view`` and ``libs-sim bench`` are started in the background
wherever they appear, the next command runs once they are ready, and they are
stopped at the end of their block; ``libs-stream watch`` without
``--duration`` gets one.

Each document runs in its own temporary folder, its blocks in order, so a
later example uses the files an earlier one made. The files a document takes
as given (``map.h5``, ``train.h5``, ``val.h5``, ``test.h5``, ``other.h5``,
``other_val.h5``, ``small.toml``, a trained
``model/`` and its export ``model.onnx``/``m.onnx``: :func:`make_givens`) are
copied in when a command names one that no earlier example made. Before a command runs, the
substitutions of :data:`SUBSTITUTIONS` scale it down (sizes, epochs, trials)
and move the stream's default ports to free ones; the table says why for each.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
OUR_COMMANDS = ("libs-sim", "libs-acquire", "libs-transfer", "libs-stream", "python", ".venv/bin/python",
                "make", "pytest")
COMMAND_TIMEOUT_S = 600
READY_TIMEOUT_S = 120

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(?P<kind>not-run|background)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")

#: (pattern, replacement, why): applied in order to every command before it runs.
SUBSTITUTIONS: list[tuple[str, object, str]] = [
    (r"\s\[--protocol [^\]]*\]", "", "optional arguments shown in brackets are left out"),
    (r"--protocol causal\|paper", "--protocol causal", "one of the alternatives"),
    (r"\s\[[^\]]*\]", "", "optional arguments shown in brackets are left out"),
    (r"\bOTHER_TRAIN\.h5\b", "other.h5", "a placeholder in capitals stands for the given file of that name"),
    (r"\bOTHER_VAL\.h5\b", "other_val.h5", "the same"),
    (r"\b(TRAIN|VAL|TEST|MAP)\.h5\b", lambda m: m.group(1).lower() + ".h5", "the same"),
    (r"^(libs-acquire map --sim\b(?!.*--shape).*)$", r"\1 --shape 12x12", "the default 40x40 map is small too"),
    (r"--shape \d+x\d+", "--shape 12x12", "maps of 144 spots: enough for every model, seconds to make"),
    (r"--shape \d+ \d+\b", "--shape 12 12", "the same, in the older spelling"),
    (r"(--preset [\w-]+)", r"\1 --shape 12x12", "a preset keeps its step, day and region; the shape is small"),
    (r"^(libs-sim generate --scenario\b(?!.*--scale).*)$", r"\1 --scale 0.25",
     "a scenario's maps with a quarter of their spots (17 300 for basalt otherwise)"),
    (r"--max-epochs \d+", "--max-epochs 1", "one epoch per training phase"),
    (r"^(libs-transfer (?:train|search)\b(?!.*--config).*)$", r"\1 --config small.toml",
     "narrow networks and few candidates (small.toml, a given): the defaults take minutes on a busy CPU"),
    (r"^(libs-transfer (?:train|add-secondary)\b(?!.*--max-epochs).*)$", r"\1 --max-epochs 1", "the same"),
    (r"--trials \d+", "--trials 2", "two search trials"),
    (r"^(libs-transfer search\b(?!.*--trials).*)$", r"\1 --trials 2", "the same"),
    (r"^(libs-transfer search\b(?!.*--max-epochs).*)$", r"\1 --max-epochs 1", "the same"),
    (r"^(libs-stream send .*--rate )\d+", r"\g<1>0", "libs-stream send unpaced"),
    (r"^(libs-stream view\b(?!.*--port).*)$", r"\1 --port 0", "the live view on a free port"),
    (r"--view\b(?!-)(?!.*--view-port)", "--view --view-port 0", "the same, started by libs-acquire map"),
]


@dataclass
class Block:
    document: Path
    line: int
    text: str
    not_run: str | None = None
    background: str | None = None          # ready text; "" = no wait
    commands: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def shell_blocks(document: Path) -> list[Block]:
    text = document.read_text("utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        lang, body = match.group("lang").lower(), match.group("body")
        commands = split_commands(body)
        if lang not in SHELL_LANGUAGES and not (lang == "" and commands and commands[0].startswith(OUR_COMMANDS)):
            continue
        line = text.count("\n", 0, match.start()) + 1
        block = Block(document, line, body, commands=commands)
        previous = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(previous)
        if marker and marker.group("kind") == "not-run":
            block.not_run = marker.group("arg") or "marked not-run"
        elif marker:
            block.background = (marker.group("arg") or "").strip().strip('"')
        blocks.append(block)
    return blocks


def split_commands(body: str) -> list[str]:
    """One command per line (backslash continuations joined), comments and prompts dropped."""
    commands, pending = [], ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        line = re.sub(r"^\$\s+", "", line)
        if not line or line.startswith("#"):
            continue
        commands.append(_strip_comment(line))
    return commands


def _strip_comment(line: str) -> str:
    # a trailing "# ..." explains the example; flags added by the substitutions must not land in it
    return re.sub(r"\s+#.*$", "", line)


def scaled(command: str, ports: dict[int, int]) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        command = re.sub(pattern, replacement, command)
    return _moved_ports(command, ports)


# -- the stream's default ports, moved to free ones (other programs on this machine may use 5557-5559) --

STREAM_DEFAULTS = {"--input": 5557, "--output": 5558, "--control": 5559, "--results": 5558}
STREAM_FLAGS = {"serve": ("--input", "--output", "--control"), "send": ("--input", "--output"),
                "watch": ("--output", "--control"), "control": ("--control",), "view": ("--results",)}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _moved_ports(command: str, ports: dict[int, int]) -> str:
    def port(match):
        return f"{match.group(1)}:{ports.get(int(match.group(2)), int(match.group(2)))}"
    command = re.sub(r"(tcp://(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\*)):(\d+)", port, command)
    stream = re.match(r"libs-stream (\w+)", command)
    if stream and stream.group(1) in STREAM_FLAGS:
        for flag in STREAM_FLAGS[stream.group(1)]:
            if f"{flag} " not in command:
                command += f" {flag} tcp://127.0.0.1:{ports[STREAM_DEFAULTS[flag]]}"
    if re.match(r"libs-stream watch\b", command) and "--duration" not in command:
        # the examples run it in the foreground, where it only shows that it connects and draws
        command += " --duration 2"
    return command


# -- servers --------------------------------------------------------------------------------

@dataclass
class Server:
    command: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""


def server_ready_text(command: str) -> str | None:
    """What a known server prints once it is ready, or None when the command is not a server."""
    if re.match(r"libs-stream serve\b", command):
        return "ready: input"
    if re.match(r"libs-sim bench\b", command):
        return "serving"
    if re.match(r"libs-stream view\b", command):
        return "live view: "
    return None


class DocumentRun:
    """Runs one document's blocks in order in ``workdir``."""

    def __init__(self, workdir: Path, env: dict[str, str], givens: Path | None = None):
        self.workdir = workdir
        self.env = env
        self.givens = givens
        self._copied: set[str] = set()
        base = free_ports(6)
        self.ports = {5557: base[0], 5558: base[1], 5559: base[2], 5567: base[3], 5568: base[4], 5569: base[5]}
        self.servers: list[Server] = []

    def run_block(self, block: Block) -> list[str]:
        """Run the block's commands; servers it started stop at its end unless the block is marked background.
        Returns the problems stopping them."""
        before = len(self.servers)
        try:
            for command in block.commands:
                command = scaled(command, self.ports).rstrip("& ").rstrip()
                self.provide_givens(command)
                ready = block.background if block.background is not None else server_ready_text(command)
                if ready is not None:
                    self.start_server(command, ready, block)
                else:
                    self.run(command, block)
        finally:
            problems = [] if block.background is not None else self.stop_servers(since=before)
        return problems

    def provide_givens(self, command: str) -> None:
        """A file the command reads that no earlier example of the document made comes from the givens."""
        if self.givens is None:
            return
        words = command.split()
        for i, word in enumerate(words):
            name = word.rstrip("/")
            target = self.workdir / name
            if i and words[i - 1] == "--out":
                if name in self._copied:      # the document makes it itself: the given copy goes
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
                    self._copied.discard(name)
                continue
            if "/" in name or not (self.givens / name).exists() or target.exists():
                continue
            source = self.givens / name
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
            self._copied.add(name)

    def run(self, command: str, block: Block) -> None:
        try:
            done = subprocess.run(["bash", "-c", command], cwd=self.workdir, env=self.env, capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{block.where}: `{command}` did not finish in {COMMAND_TIMEOUT_S} s"
                                 f"{self._servers_said()}") from None
        if done.returncode != 0:
            raise AssertionError(f"{block.where}: `{command}` exited {done.returncode}\n--- stdout\n"
                                 f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}{self._servers_said()}")

    def start_server(self, command: str, ready: str, block: Block) -> None:
        log = self.workdir / f".server-{len(self.servers)}.log"
        with open(log, "w") as sink:
            process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.workdir, env=self.env,
                                       stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(command, process, log)
        self.servers.append(server)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready and ready not in server.output():
            if process.poll() is not None:
                raise AssertionError(f"{block.where}: server `{command}` exited {process.returncode}:\n"
                                     f"{server.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.where}: server `{command}` printed no {ready!r} within "
                                     f"{READY_TIMEOUT_S} s:\n{server.output()[-3000:]}")
            time.sleep(0.05)

    def _servers_said(self) -> str:
        return "".join(f"\n--- server `{s.command}`\n{s.output()[-1500:]}" for s in self.servers)

    def stop_servers(self, since: int = 0) -> list[str]:
        """SIGINT the servers started since the ``since``-th, as Ctrl-C would; returns what went wrong."""
        problems = []
        for server in reversed(self.servers[since:]):
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGINT)
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
                problems.append(f"`{server.command}` ignored SIGINT for 30 s")
                continue
            if server.process.returncode not in (0, 130, -signal.SIGINT):
                problems.append(f"`{server.command}` exited {server.process.returncode}:\n{server.output()[-1500:]}")
        del self.servers[since:]
        return problems


COMMANDS = {"libs-sim": "sim.cli", "libs-acquire": "acquisition.cli", "libs-transfer": "transfer.cli",
            "libs-stream": "streaming.cli"}


def install_commands(bin_dir: Path, python: str) -> None:
    """The four commands of this checkout (and `python`, `.venv/bin/python`) as a user has them."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in COMMANDS.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
        script.chmod(0o755)
    (bin_dir / "python").symlink_to(python)


def environment(bin_dir: Path) -> dict[str, str]:
    """The commands of this checkout first on PATH; a progress line every second in the logs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TWINPLUME_PROGRESS_EVERY_S="1", COLUMNS="100")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


#: Narrow networks, a narrow search space and fewer baseline and k-means candidates for the examples
#: (sizes are not what they show; every model and every choice on validation still runs).
SMALL_CONFIG = """\
[vae]
hidden = [64, 32]
latent = 8

[mlp]
hidden = [32, 32]

[baselines]
pls_components = 4
pls_components_candidates = [2, 4]
ridge_alpha_candidates = [1e-3, 1e-1]

[kmeans]
k_candidates = [2, 3, 4]

[search]
vae_first = [64, 32]
vae_second = [32, 16]
latent = [8, 4]
mlp_first = [32, 16]
mlp_second = [32, 16]
"""


def make_givens(folder: Path, env: dict[str, str]) -> Path:
    """The files the docs take as given, small: three 12x12 maps, a model trained one epoch, its export."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "small.toml").write_text(SMALL_CONFIG, "utf-8")
    commands = [
        "libs-sim generate --shape 12x12 --step-um 40 --day 0 --seed 1 --out train.h5 --no-progress",
        "libs-sim generate --shape 12x12 --step-um 40 --day 0 --origin-um 0,2000 --seed 1 --out val.h5 --no-progress",
        "libs-sim generate --shape 12x12 --step-um 40 --day 1 --origin-um 2000,0 --seed 1 --out test.h5 --no-progress",
        "cp test.h5 map.h5",
        "cp train.h5 other.h5",
        "cp val.h5 other_val.h5",
        "libs-transfer train train.h5 --val val.h5 --out model/ --max-epochs 1 --config small.toml -q",
        "libs-transfer export model/ --out model.onnx -q",
        "cp model.onnx m.onnx",
    ]
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        assert done.returncode == 0, f"making the docs' given files: `{command}`:\n{done.stderr[-3000:]}"
    return folder
