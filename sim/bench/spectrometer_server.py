"""The simulated spectrometers on a local socket, for clients in other processes.

A real spectrometer sits behind its vendor SDK; the simulated ones live in the
bench's process. To rehearse a bench config through the same code path a lab
uses (``libs-sim bench --write-config bench.toml``, then ``libs-acquire map
--config bench.toml`` in another process), the bench serves them on a
loopback TCP port, and ``drivers.sim_spectrometer.BenchSpectrometer`` is the
driver that talks to it. Frames come from the same engine, on the same clock
as the bench's delay generator.

Protocol (one connection per spectrometer): each request is one JSON line
``{"op": NAME, "args": {...}}``; each reply one JSON line, ``{"ok": VALUE}``
or ``{"error": "timeout" | "instrument" | "value", "message": TEXT}``. The
first request of a connection is ``open`` with ``{"system": NAME}``. A
``read_batch`` reply ``{"ok": [[frame, timestamp, saturated], ...], "pixels":
N}`` is followed by the frames' counts as raw little-endian float32, N per
frame.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading

import numpy as np

from drivers.errors import InstrumentError, InstrumentTimeout

log = logging.getLogger(__name__)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        bench = self.server.bench
        spec = None
        try:
            for line in self.rfile:
                try:
                    request = json.loads(line)
                    op, args = request["op"], request.get("args", {})
                    if spec is None:
                        if op != "open":
                            raise ValueError("the first request must be 'open'")
                        spec = bench.spectrometer(str(args["system"]))
                        self._reply({"ok": {"model": spec.model, "serial": spec.serial, "pixels": spec.pixels}})
                        continue
                    if op == "read_batch":
                        frames = spec.read_batch(int(args["max_frames"]), float(args["timeout_s"]))
                        head = [[f.frame, f.timestamp, bool(f.saturated)] for f in frames]
                        payload = np.stack([f.counts for f in frames]).astype("<f4").tobytes()
                        self._reply({"ok": head, "pixels": spec.pixels}, payload)
                        continue
                    self._reply({"ok": _call(spec, op, args)})
                except InstrumentTimeout as exc:
                    self._reply({"error": "timeout", "message": str(exc)})
                except InstrumentError as exc:
                    self._reply({"error": "instrument", "message": str(exc)})
                except (ValueError, KeyError, TypeError) as exc:
                    self._reply({"error": "value", "message": f"{type(exc).__name__}: {exc}"})
        except (ConnectionError, OSError):
            pass
        finally:
            if spec is not None:
                spec.close()

    def _reply(self, message: dict, payload: bytes = b"") -> None:
        self.wfile.write(json.dumps(message).encode() + b"\n" + payload)
        self.wfile.flush()


def _call(spec, op: str, args: dict):
    if op == "wavelengths":
        return [float(v) for v in spec.wavelengths()]
    if op in ("saturation_level", "gate_delay_s", "gate_width_s", "trigger_mode"):
        value = getattr(spec, op)
        return value if isinstance(value, str) else float(value)
    if op in ("set_gate_delay_s", "set_gate_width_s", "set_trigger_mode"):
        setattr(spec, op[4:], args["value"])
        return None
    if op == "arm":
        spec.arm(int(args["n"]))
        return None
    if op == "abort":
        spec.abort()
        return None
    raise ValueError(f"unknown operation {op!r}")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SpectrometerServer:
    """Serves ``bench.spectrometer(system)`` on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, bench) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.bench = bench
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-spectrometers",
                                        daemon=True)

    @property
    def resource(self) -> str:
        host, port = self._server.server_address[:2]
        return f"tcp://{host}:{port}"

    def start(self) -> "SpectrometerServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
