"""Loopback servers for testing the remote read path for real (no mocks of pystac-client/GDAL).

- :func:`serve_files` — a threaded HTTP file server on 127.0.0.1 with byte-range support
  (what GDAL's ``/vsicurl/`` needs to read COGs remotely), optional injected faults.
- :func:`serve_stac_api` — a real STAC API (``rustac serve``, in-memory backend) loaded with
  item JSON files, on a free 127.0.0.1 port chosen here (port 0 breaks rustac's self-links).
- :func:`http_items` — copies of catalog items whose asset hrefs point at the file server.

Everything binds to 127.0.0.1 only and is stopped by the returned handle's ``close()``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pystac


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Faults:
    """Faults a loopback server injects, and what it saw.

    ``fail_first`` requests answer ``fail_status`` (with a ``Retry-After: retry_after`` header
    when set, as rate limiters do); ``delay_s`` slows every answer; paths in ``missing`` are
    404; files in ``truncate`` are served shorter than they are; paths in ``short_body``
    announce the full ``Content-Length`` but the connection closes after a third of the
    bytes (a cut download), and paths in ``cut_once`` the same on their first GET only (a
    transient cut); a request whose query string contains one of
    ``expired_tokens`` is refused with 403 (an expired signed URL). ``requests`` counts
    requests, ``range_requests`` the GETs with a ``Range`` header (COG block reads) and
    ``forbidden`` the 403s sent.
    """

    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    missing: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    short_body: set[str] = field(default_factory=set)
    cut_once: set[str] = field(default_factory=set)
    expired_tokens: set[str] = field(default_factory=set)
    requests: int = 0
    range_requests: int = 0
    forbidden: int = 0


def _send_fault(handler: http.server.BaseHTTPRequestHandler, faults: Faults, status: int, message: str) -> None:
    body = f"{status} {message}".encode()
    handler.send_response(status)
    if faults.retry_after is not None:
        handler.send_header("Retry-After", faults.retry_after)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support and fault injection."""

    faults: Faults

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _fault(self) -> bool:
        self.faults.requests += 1
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        name, _, query = self.path.partition("?")
        name = name.lstrip("/")
        if self.command == "GET" and self.headers.get("Range"):
            self.faults.range_requests += 1
        if name in self.faults.missing:
            self.send_error(404, "missing")
            return True
        if any(token in query for token in self.faults.expired_tokens):
            self.faults.forbidden += 1
            _send_fault(self, self.faults, 403, "AuthenticationFailed: Signed expiry time has passed")
            return True
        if self.faults.requests <= self.faults.fail_first:
            _send_fault(self, self.faults, self.faults.fail_status, "injected fault")
            return True
        return False

    def do_HEAD(self) -> None:
        if self._fault():
            return
        super().do_HEAD()

    def do_GET(self) -> None:
        if self._fault():
            return
        path = Path(self.translate_path(self.path.split("?")[0]))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        if self.path.split("?")[0].lstrip("/") in self.faults.truncate:
            data = data[: len(data) // 3]
        size = len(data)
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].split(",")[0].partition("-")
            start = int(first) if first else max(0, size - int(last))
            end = min(int(last), size - 1) if (first and last) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff" if path.suffix == ".tif" else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        name = self.path.split("?")[0].lstrip("/")
        cut = name in self.faults.short_body or name in self.faults.cut_once
        self.faults.cut_once.discard(name)
        if cut:
            self.wfile.write(body[: len(body) // 3])  # then hang up: fewer bytes than announced
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _QuietServer(http.server.ThreadingHTTPServer):
    """Loopback server that does not print tracebacks when a client hangs up mid-response."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class Server:
    """A running loopback server: ``url`` and ``close()``."""

    url: str
    close: Any
    faults: Faults | None = None

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_files(root: str | os.PathLike[str], *, faults: Faults | None = None) -> Server:
    """Serve ``root`` over HTTP on 127.0.0.1 with range requests; returns a :class:`Server`."""
    faults = faults or Faults()
    handler = type("Handler", (_RangeHandler,), {"faults": faults})
    server = _QuietServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def close() -> None:
        server.shutdown()
        server.server_close()

    return Server(f"http://127.0.0.1:{server.server_address[1]}", close, faults)


def http_items(catalog_path: str | os.PathLike[str], base_url: str, root: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write each collection's items of a static catalog as a FeatureCollection JSON file in
    ``out_dir`` (one file per collection), with asset hrefs rewritten to ``base_url`` + the
    asset's path relative to ``root``. Returns the JSON paths (for :func:`serve_stac_api`)."""
    catalog = pystac.Catalog.from_file(str(catalog_path))
    root = Path(root).resolve()
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for item in catalog.get_items(recursive=True):
        item = item.clone()
        item.make_asset_hrefs_absolute()
        for asset in item.assets.values():
            rel = Path(asset.href).resolve().relative_to(root)
            asset.href = f"{base_url}/{rel.as_posix()}"
        data = item.to_dict(include_self_link=False, transform_hrefs=False)
        data["links"] = []
        by_collection.setdefault(item.collection_id or "items", []).append(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for collection_id, features in sorted(by_collection.items()):
        path = out / f"{collection_id}.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        paths.append(path)
    return paths


def rustac_executable() -> str | None:
    """Path of the ``rustac`` command (pip package rustac), or None."""
    beside = Path(sys.executable).parent / "rustac"
    return str(beside) if beside.exists() else shutil.which("rustac")


def serve_stac_api(item_files: Iterable[str | os.PathLike[str]], *, timeout_s: float = 20.0) -> Server:
    """Start ``rustac serve`` on a free 127.0.0.1 port with the given item JSON files."""
    exe = rustac_executable()
    if exe is None:
        raise RuntimeError("rustac is not installed: pip install rustac")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "serve", "--addr", f"127.0.0.1:{port}", *map(str, item_files)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"rustac serve did not start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
        time.sleep(0.1)

    def close() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    return Server(url, close)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Forwards to ``target`` (rewriting its URL in bodies to ours), injecting :class:`Faults`."""

    target: str
    own_url: str
    faults: Faults

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        self.faults.requests += 1
        if self.faults.delay_s:
            time.sleep(self.faults.delay_s)
        if self.faults.requests <= self.faults.fail_first:
            _send_fault(self, self.faults, self.faults.fail_status, "injected fault")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if body is not None:
            body = body.replace(self.own_url.encode(), self.target.encode())
        request = urllib.request.Request(self.target + self.path, data=body, method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            status, headers, payload = err.code, err.headers, err.read()
        payload = payload.replace(self.target.encode(), self.own_url.encode())
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward


def serve_proxy(target: str, *, faults: Faults | None = None) -> Server:
    """A loopback HTTP proxy in front of ``target`` (e.g. a rustac STAC API) that injects faults."""
    faults = faults or Faults()
    port = free_port()
    own_url = f"http://127.0.0.1:{port}"
    handler = type("Proxy", (_ProxyHandler,), {"target": target.rstrip("/"), "own_url": own_url, "faults": faults})
    server = _QuietServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def close() -> None:
        server.shutdown()
        server.server_close()

    return Server(own_url, close, faults)
