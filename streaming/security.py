"""CURVE encryption and client authentication for the stream sockets.

The worker is a CURVE server on all its sockets when it has a key pair; a ZAP handler
(zmq.auth ThreadAuthenticator) admits only clients whose public keys are in a directory.
Binding anything but a loopback address without keys is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


class SecurityError(RuntimeError):
    """Keys are missing, unreadable, or required but not given."""


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// addresses on the loopback interface."""
    transport, _, rest = address.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0]
    if ";" in host:            # "source;destination" form of a connect address
        host = host.split(";")[-1]
    host = host.strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False         # "*", interface names, host names


def require_keys_for(addresses: list[str], have_keys: bool) -> None:
    """Refuse a non-loopback address when no CURVE keys are configured."""
    exposed = [a for a in addresses if not is_loopback(a)]
    if exposed and not have_keys:
        raise SecurityError(
            f"{', '.join(exposed)} is not a loopback address: other machines could read the stream or feed "
            "it. Give CURVE keys (serve: --curve-secret and --curve-clients; make them with "
            "`libs-stream keys`), or bind to 127.0.0.1.")


def make_keys(out_dir: str | os.PathLike, name: str = "worker") -> tuple[Path, Path]:
    """Create ``NAME.key`` (public, to hand out) and ``NAME.key_secret`` (keep) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = (out / f"{name}.key", out / f"{name}.key_secret")
    if public.exists() or secret.exists():
        raise SecurityError(f"{public} or {secret} already exists; not overwriting a key pair")
    public_file, secret_file = zmq.auth.create_certificates(out, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def _load(path: str | os.PathLike, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise SecurityError(f"key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise SecurityError(f"{path} is not a ZeroMQ certificate: {exc}") from None
    if need_secret and not secret:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


@dataclass
class ServerKeys:
    """The worker's key pair and the directory of allowed client public keys."""

    public: bytes
    secret: bytes
    clients_dir: Path

    @classmethod
    def load(cls, secret_file: str | os.PathLike, clients_dir: str | os.PathLike) -> "ServerKeys":
        public, secret = _load(secret_file, need_secret=True)
        clients = Path(clients_dir)
        if not clients.is_dir():
            raise SecurityError(f"allowed-clients directory {clients} does not exist")
        if not list(clients.glob("*.key")):
            raise SecurityError(f"{clients} holds no client public keys (*.key); nobody could connect")
        return cls(public, secret, clients)

    def start_authenticator(self, context: zmq.Context) -> ThreadAuthenticator:
        auth = ThreadAuthenticator(context, log=logging.getLogger("streaming.auth"))
        auth.start()
        auth.configure_curve(domain="*", location=str(self.clients_dir))
        log.info("CURVE on; allowed client keys from %s", self.clients_dir)
        return auth

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


@dataclass
class ClientKeys:
    """A client's key pair and the worker's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, secret_file: str | os.PathLike, server_public_file: str | os.PathLike) -> "ClientKeys":
        public, secret = _load(secret_file, need_secret=True)
        server_public, _ = _load(server_public_file, need_secret=False)
        return cls(public, secret, server_public)

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public


def client_keys_from_args(secret_file, server_public_file) -> ClientKeys | None:
    """Both or neither: a half-configured client would fail its handshake silently."""
    if bool(secret_file) != bool(server_public_file):
        raise SecurityError("CURVE needs both --curve-secret (this client's .key_secret) and --curve-server "
                            "(the worker's public .key)")
    return ClientKeys.load(secret_file, server_public_file) if secret_file else None
