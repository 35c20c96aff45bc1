"""The worker's control channel (REQ/REP, JSON) and the client side of the readiness handshake.

Requests: {"cmd": "ping"}, {"cmd": "stats"}, {"cmd": "model"} (spec) and {"cmd": "hello",
"token": "..."} (extension: the worker publishes a ``status`` message carrying the token at
once, so a subscriber can tell that its SUB socket is connected). Replies always carry
"ok": true, or "ok": false with an "error".

A request is decoded under the same kind of limits as stream input (request bytes, JSON
depth), and a hello token is at most HELLO_TOKEN_CHARS printable ASCII characters: the
worker republishes it to every subscriber, so it must not carry more than a name.
"""

from __future__ import annotations

import json
import time

import zmq

from .protocol import MessageError, loads_bounded, quote
from .security import ClientKeys

COMMANDS = ("ping", "stats", "model", "hello")
MAX_REQUEST_BYTES = 4096
MAX_REQUEST_DEPTH = 4
HELLO_TOKEN_CHARS = 64


class ControlError(RuntimeError):
    """The worker did not answer, or answered with "ok": false."""


def parse_request(frames: list[bytes]) -> tuple[dict | None, str | None]:
    """(request, None) or (None, reason it cannot be served); the reason quotes little of the request."""
    if len(frames) != 1:
        return None, f"a control request is one frame of JSON, got {len(frames)} frames"
    try:
        request = loads_bounded(bytes(frames[0]), what="control request", max_bytes=MAX_REQUEST_BYTES,
                                max_depth=MAX_REQUEST_DEPTH)
    except MessageError as exc:
        return None, exc.reason
    cmd = request.get("cmd") if isinstance(request, dict) else None
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        return None, f"control request needs \"cmd\" one of {list(COMMANDS)}, got {quote(cmd)}"
    if cmd == "hello":
        token = request.get("token", "")
        if not (isinstance(token, str) and len(token) <= HELLO_TOKEN_CHARS and token.isascii()
                and token.isprintable()):
            return None, f"hello \"token\" must be at most {HELLO_TOKEN_CHARS} printable ASCII characters"
    return request, None


def request(address: str, message: dict, *, timeout_s: float = 2.0, keys: ClientKeys | None = None,
            context: zmq.Context | None = None) -> dict:
    """Send one control request and return the reply; ControlError on timeout or refusal."""
    context = context or zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    if keys is not None:
        keys.apply(sock)
    try:
        sock.connect(address)
        sock.send(json.dumps(message).encode())
        if not sock.poll(int(timeout_s * 1000)):
            raise ControlError(f"no answer from the worker's control socket {address} within {timeout_s} s")
        try:
            reply = json.loads(sock.recv())
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ControlError(f"the control socket {address} answered something that is not a JSON object")
    finally:
        sock.close()
    if not reply.get("ok"):
        raise ControlError(f"worker refused {message}: {reply.get('error')}")
    return reply


def wait_ready(address: str, *, timeout_s: float = 30.0, keys: ClientKeys | None = None,
               context: zmq.Context | None = None) -> dict:
    """Ping until the worker answers: it answers only once its model is loaded and all sockets bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return request(address, {"cmd": "ping"}, timeout_s=max(0.05, min(0.5, left)), keys=keys,
                           context=context)
        except ControlError:
            if time.monotonic() >= deadline:
                raise ControlError(f"worker at {address} not ready after {timeout_s} s") from None
