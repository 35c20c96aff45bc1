"""Run the live view: check the addresses, pick the access policy, serve with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import sys
import threading

from acquisition.shared.cli import parse_shape  # noqa: F401  (re-exported for the view's callers)

from .app import LiveView, ViewConfig, build_app

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_url(config: ViewConfig) -> str:
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.port}/"
    return url + (f"?token={config.token}" if config.token else "")


def prepare(config: ViewConfig) -> ViewConfig:
    """Off loopback the page needs an access token (made here unless given)."""
    if not is_loopback(config.host) and not config.token:
        config.token = secrets.token_urlsafe(18)
    return config


def bind(config: ViewConfig) -> socket.socket:
    """The listening socket (port 0: the system picks); OSError naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    sock.listen(128)
    config.port = sock.getsockname()[1]
    return sock


def _websocket_implementation() -> str:
    """uvicorn's websockets-sansio where this uvicorn has it (the legacy one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


def _stop_when_stdin_closes(server) -> None:
    """Ask uvicorn to shut down once standard input reaches its end (the parent process went away)."""
    def wait():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        log.info("standard input closed: stopping the view")
        server.should_exit = True

    threading.Thread(target=wait, name="view-stdin", daemon=True).start()


def serve(config: ViewConfig, *, announce=print, stop_with_stdin: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (or, with ``stop_with_stdin``, until standard input closes)."""
    import uvicorn

    config = prepare(config)
    sock = bind(config)
    view = LiveView(config)
    app = build_app(view)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws=_websocket_implementation(), lifespan="on",
                                           access_log=False))
    if stop_with_stdin:
        _stop_when_stdin_closes(server)
    announce(f"live view: {page_url(config)}" + ("" if not config.token else "  (the token is needed off loopback)"))
    server.run(sockets=[sock])
