"""The web side of the live view: one read-only page, a websocket of map updates, a spot endpoint.

A page gets one snapshot (every spot shown so far) when it connects, then deltas: the
spots that changed since the previous flush, a few times a second. A page that cannot
keep up (its send queue full) is sent a fresh snapshot instead of a growing backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from importlib import resources
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..security import ClientKeys
from .feed import ResultFeed, novelty_threshold, trust_threshold
from .measured import MeasuredMap
from .state import MapState, encode_frame

log = logging.getLogger(__name__)

FLUSH_S = 0.125        # deltas at 8 Hz: a spot is drawn within ~0.2 s, and a page gets few messages
HEALTH_S = 1.0         # health and colour limits once a second
HISTORY = 900          # seconds of the drift figure kept (and sent to a new page)
CLIENT_QUEUE = 16      # messages queued per page before it is resynchronised with a snapshot
COOKIE = "twinplume_view"
# without --shape the map grows with the spots seen, but never past this (as --shape allows)
MAX_GROWN_SPOTS = 25_000_000


@dataclass
class ViewConfig:
    results: list[str]
    controls: list[str] = field(default_factory=list)
    map_path: str | None = None
    wait_for_map: bool = False          # the map file may not exist yet (the acquisition creates it)
    shape: tuple[int, int] | None = None
    host: str = "127.0.0.1"
    port: int = 8050
    token: str | None = None
    spectra_budget_bytes: int = 256 << 20
    keys: ClientKeys | None = None


class _Client:
    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_QUEUE)
        self.resync = False


class LiveView:
    """Owns the map state; only the event loop touches it (flush, snapshot), so both agree."""

    def __init__(self, config: ViewConfig):
        self.config = config
        self.measured = MeasuredMap(config.map_path, wait=config.wait_for_map) if config.map_path else None
        shape = config.shape or (self.measured.shape if self.measured else None)
        self.fixed_shape = shape is not None
        self.state = MapState(shape or (1, 1))
        self.feed = ResultFeed(config.results, config.controls, keys=config.keys, spectra_budget_bytes=config.spectra_budget_bytes,
                               n_spots_hint=(shape[0] * shape[1]) if shape else 1 << 30,
                               on_results=self.measured.add if self.measured else None)
        self.clients: set[_Client] = set()
        self.outside = 0
        self.history: deque[list] = deque(maxlen=HISTORY)
        self._second = {"t": time.time(), "novelty": [], "trust": [], "error": [], "spectra": 0}
        self._last_health = 0.0
        self.limits = self.state.limits()
        self.stats = {"flushes": 0, "messages_sent": 0, "bytes_sent": 0, "snapshots": 0, "resyncs": 0}
        self._task: asyncio.Task | None = None

    # -- life cycle (Starlette lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        if self.measured:
            self.measured.start()
        self.feed.start()
        self._task = asyncio.create_task(self._flush_loop())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.feed.stop()
            if self.measured:
                self.measured.stop()

    # -- flushing

    async def _flush_loop(self) -> None:
        next_flush = time.monotonic()
        while True:
            next_flush = max(next_flush + FLUSH_S, time.monotonic())
            await asyncio.sleep(next_flush - time.monotonic())
            try:
                self.flush()
            except Exception:  # keep serving pages whatever one flush met; they start again from a snapshot
                log.exception("flush failed")
                for client in self.clients:
                    client.resync = True

    def flush(self) -> None:
        batch = self.feed.take()
        iy, ix, label, emission, novelty, trust = batch.arrays()
        if self.measured:
            self.measured.model_info = self.feed.model_info
            ey, ex, error = self.measured.take()
        else:
            ey, ex, error = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
        resized = self._fit(np.concatenate([iy, ey]), np.concatenate([ix, ex]))
        spots, inside = self._inside(iy, ix)
        self.state.apply(spots, label[inside], emission[inside], novelty[inside], trust[inside])
        espots, einside = self._inside(ey, ex)
        self.state.apply_error(espots, error[einside])
        second = self._second
        second["novelty"].append(novelty)
        second["trust"].append(trust)
        second["error"].append(error)
        second["spectra"] += len(iy)
        now = time.time()
        header: dict = {"type": "delta"}
        if batch.oldest_t is not None:
            header["oldest_t"] = batch.oldest_t
        if time.monotonic() - self._last_health >= HEALTH_S:
            self._last_health = time.monotonic()
            self.limits = self.state.limits()
            try:
                header.update(self._health_fields())
            except Exception:  # the spots of this flush must reach the pages all the same
                log.exception("health figures failed")
            point = self._history_point(now)
            self.history.append(point)
            header["history"] = [point]
        self.stats["flushes"] += 1
        if resized:
            for client in self.clients:
                client.resync = True
            changed = None
        else:
            changed = np.union1d(spots, espots).astype(np.uint32) if len(espots) else np.unique(spots)
        if changed is None or (len(changed) == 0 and len(header) == 1):
            self._wake_resyncs()
            return
        self.broadcast(encode_frame(header, changed, self.state))

    def _inside(self, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.state.shape
        inside = (iy < ny) & (ix < nx)
        if not inside.all():
            self.outside += int(np.count_nonzero(~inside))
        return self.state.flat(iy[inside], ix[inside]), inside

    def _fit(self, iy: np.ndarray, ix: np.ndarray) -> bool:
        """Without a fixed shape, grow the map to hold every spot seen (each side doubling)."""
        if self.fixed_shape or iy.size == 0:
            return False
        # spots that would grow the map beyond MAX_GROWN_SPOTS are not placed (counted outside)
        fits = (iy + 1.0) * (ix + 1.0) <= MAX_GROWN_SPOTS
        if not fits.any():
            return False
        ny, nx = int(iy[fits].max()) + 1, int(ix[fits].max()) + 1
        if ny <= self.state.shape[0] and nx <= self.state.shape[1]:
            return False
        if ny * nx > MAX_GROWN_SPOTS:
            ny, nx = min(ny, self.state.shape[0]), min(nx, self.state.shape[1])
        self.state = self.state.grown_to(ny, nx, max_spots=MAX_GROWN_SPOTS)
        return True

    def _history_point(self, now: float) -> list:
        """[time, spectra/s, median novelty, median expected relative error, median transfer error] of the last second."""
        second, self._second = self._second, {"t": now, "novelty": [], "trust": [], "error": [], "spectra": 0}
        span = max(now - second["t"], 1e-3)
        point = [round(now, 3), round(second["spectra"] / span, 1)]
        for name in ("novelty", "trust", "error"):
            values = np.concatenate(second[name]) if second[name] else np.empty(0)
            values = values[np.isfinite(values)]
            point.append(None if values.size == 0 else round(float(np.median(values)), 5))
        return point

    def _health_fields(self) -> dict:
        complete = self.fixed_shape and self.state.shown >= self.state.size
        health = self.feed.health(complete=complete)
        health.update(shown=self.state.shown, outside=self.outside, clients=len(self.clients))
        if self.measured:
            health["measured"] = {"problem": self.measured.problem, "errors": self.measured.computed, "given_up": self.measured.given_up,
                                  "dropped": self.measured.dropped, "map": self.measured.path,
                                  "secondary_shift_px": self.measured.secondary_shift_px,
                                  "secondary_shift_note": self.measured.secondary_shift_note()}
        info = self.feed.model_info
        return {"health": health, "limits": self.limits,
                "thresholds": {"novelty": novelty_threshold(info), "trust": trust_threshold(info)}}

    def snapshot(self) -> bytes:
        header = {"type": "snapshot", "shape": list(self.state.shape), "history": list(self.history),
                  "has_map": self.measured is not None, "has_primary": bool(self.measured and (self.measured.primary or self.measured.reader is None)),
                  "store": {"capacity": self.feed.store.capacity, "bytes": self.feed.store.nbytes},
                  **self._health_fields()}
        self.stats["snapshots"] += 1
        return encode_frame(header, self.state.filled(), self.state)

    # -- pages

    def broadcast(self, frame: bytes) -> None:
        for client in list(self.clients):
            if client.resync:
                continue
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                client.resync = True
                self.stats["resyncs"] += 1
        self._wake_resyncs()

    def _wake_resyncs(self) -> None:
        for client in self.clients:
            if client.resync and client.queue.empty():
                client.resync = False
                client.queue.put_nowait(self.snapshot())

    async def serve_page(self, websocket: WebSocket) -> None:
        await websocket.accept()
        client = _Client(websocket)
        client.queue.put_nowait(self.snapshot())
        self.clients.add(client)
        receiver = asyncio.create_task(self._drain_incoming(websocket))
        try:
            while not receiver.done():
                getter = asyncio.create_task(client.queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                frame = getter.result()
                await websocket.send_bytes(frame)
                self.stats["messages_sent"] += 1
                self.stats["bytes_sent"] += len(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.clients.discard(client)
            receiver.cancel()

    @staticmethod
    async def _drain_incoming(websocket: WebSocket) -> None:
        """The page is read-only: whatever it sends is ignored; this only notices it leaving."""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return

    def spot(self, iy: int, ix: int) -> dict:
        ny, nx = self.state.shape
        if not (0 <= iy < ny and 0 <= ix < nx):
            return {"error": f"spot ({iy}, {ix}) is outside the {ny}x{nx} map"}
        flat = iy * nx + ix
        info = self.feed.model_info or {}
        out: dict = {"iy": iy, "ix": ix, "label": int(self.state.label[flat]),
                     "novelty": _finite(self.state.novelty[flat]), "trust": _finite(self.state.trust[flat]),
                     "error": _finite(self.state.error[flat]),
                     "curves": {}, "notes": []}
        transferred = self.feed.store.get(iy, ix)
        if transferred is not None:
            axis = info.get("primary_wavelengths")
            if not (isinstance(axis, list) and len(axis) == transferred.size):
                axis = list(range(transferred.size))
                out["notes"].append("no primary wavelength axis from the model (ask with --control): pixel index")
            out["curves"]["transferred"] = {"x": axis, "y": _rounded(transferred)}
        elif out["label"] >= 0:
            out["notes"].append(f"transferred spectrum no longer held (the view keeps the latest "
                                f"{self.feed.store.capacity} spots)")
        if self.measured is None:
            out["notes"].append("secondary and measured primary spectra need the map file (--map); "
                                "the worker's output carries the transferred spectrum only")
        else:
            measured = self.measured.spot(iy, ix)
            if not measured:
                out["notes"].append(f"spot ({iy}, {ix}) not yet in {self.measured.path}")
            for name, key in (("secondary", "secondary"), ("measured primary", "primary")):
                if key in measured:
                    axis, values = measured[key]
                    out["curves"][name] = {"x": _rounded(axis, 4), "y": _rounded(values)}
        return out


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _rounded(values, digits: int = 2) -> list:
    return np.round(np.asarray(values, np.float64), digits).tolist()


# -- access control ----------------------------------------------------------


class TokenGate:
    """ASGI middleware: every request and websocket needs the access token (query or cookie).

    A page opened with ``?token=...`` gets the token as a cookie, so its scripts, styles,
    websocket and spot requests pass too.
    """

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookies = SimpleCookie()
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                with contextlib.suppress(Exception):
                    cookies.load(value.decode("latin-1"))
        cookie = cookies[COOKIE].value if COOKIE in cookies else ""
        by_query = secrets.compare_digest(query.encode(), self.token.encode())
        if not by_query and not secrets.compare_digest(cookie.encode(), self.token.encode()):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4401})
                return
            return await PlainTextResponse("this view needs its access token: open the URL printed by "
                                           "`libs-stream view` (…?token=…)", status_code=403)(scope, receive, send)
        if not by_query or scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


# -- the application ------------------------------------------------------------


def static_dir():
    return resources.files("streaming.view") / "static"


def build_app(view: LiveView) -> Starlette:
    static = static_dir()

    async def index(request):
        return FileResponse(str(static / "index.html"), headers={"Cache-Control": "no-store"})

    async def spot(request):
        try:
            iy, ix = int(request.query_params["iy"]), int(request.query_params["ix"])
        except (KeyError, ValueError):
            return JSONResponse({"error": "give iy and ix as integers"}, status_code=400)
        return JSONResponse(await asyncio.to_thread(view.spot, iy, ix))

    async def stats(request):
        return JSONResponse({**view.stats, "clients": len(view.clients), "shown": view.state.shown,
                             "spectra": view.feed.counts["spectra"], "lost": view.feed.missing,
                             "contact": view.feed.first_contact is not None,
                             "secondary_shift_px": view.measured.secondary_shift_px if view.measured else None})

    async def websocket(ws):
        await view.serve_page(ws)

    app = Starlette(routes=[Route("/", index), Route("/api/spot", spot), Route("/api/stats", stats),
                            WebSocketRoute("/ws", websocket),
                            Mount("/static", StaticFiles(directory=str(static)), name="static")],
                    lifespan=view.lifespan)
    if view.config.token:
        return TokenGate(app, view.config.token)
    return app
