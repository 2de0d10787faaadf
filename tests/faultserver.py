"""A loopback media server with scripted faults, for the download tests and benchmark.

``FaultServer(media_dir)`` serves ``GET /{ytid}.{ext}`` from ``media_dir/{ytid}.{ext}`` (or,
when that file does not exist, ``media_dir/default.{ext}``), with HTTP Range support (206).
The behaviour of a YTID is selected by its first ``_``-separated token (the *mode*), so one
``url_template`` (``http://127.0.0.1:PORT/{ytid}.m4a``) serves every case:

============  =================================================================================
mode          behaviour
============  =================================================================================
``ok``        the media, Range supported
``e404``      404 (any ``eNNN``: that status, e.g. ``e410``, ``e403``, ``e500``)
``e429``      429 with ``Retry-After: 1``
``flakyN``    503 with ``Retry-After: 0`` for the first N requests of the YTID, then ``ok``
``goneN``     404 for the first N requests of the YTID, then ``ok`` (a "permanent" failure
              that heals: shows whether a rerun asks again)
``trunc``     every body cut after a third (``Content-Length`` of the whole), then close
``cutN``      the first N ranged (206) responses are cut after 1/4 of their bytes; then ``ok``
``stall``     sleeps ``stall`` seconds before answering (longer than the client's timeout)
``refused``   302 to a port with no listener (connection refused)
``reset``     closes the connection without an answer
``html``      200 ``text/html`` page (not media)
``fake``      200 ``audio/mp4`` whose body is an HTML page (content that is not media)
``slow``      the media, sent in small chunks with pauses (for kill tests)
============  =================================================================================

Counters: ``requests[ytid]`` (every request), ``ranged[ytid]`` (those with a Range header),
``bytes_sent[ytid]`` (body bytes handed to the kernel), ``log`` (``[ytid, Range, bytes]`` per
request); ``reset_counts()`` clears them (the fault states of ``flakyN``/``cutN`` are kept).
Accepted sockets get a small ``SO_SNDBUF``, so bytes a client never reads do not pile up in
our send buffer; ``rate`` paces bodies like a real link (see :class:`FaultServer`).
Bound to 127.0.0.1 only; the serving thread stops when the context exits.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import socketserver
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

__all__ = ["FaultServer", "make_media", "closed_port"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CTYPES = {
    ".m4a": "audio/mp4",
    ".mp4": "video/mp4",
    ".webm": "audio/webm",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
}
SNDBUF = 8192


def make_media(
    path: str | Path,
    seconds: float,
    *,
    kind: str = "sine",
    bitrate: str = "64k",
    sample_rate: int = 44100,
) -> Path:
    """Write a real media file with ffmpeg's lavfi sources (m4a: AAC, webm: Opus)."""
    from audiosetflow.tools import ffmpeg_exe

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    src = (
        f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"
        if kind == "sine"
        else f"anoisesrc=color=pink:sample_rate={sample_rate}:duration={seconds}:amplitude=0.3"
    )
    codec = ["-c:a", "libopus"] if path.suffix == ".webm" else ["-c:a", "aac"]
    # Index up front, as in YouTube's DASH files: faststart mp4, webm with Cues first.
    extra = ["-movflags", "+faststart"] if path.suffix in (".m4a", ".mp4") else []
    if path.suffix == ".webm":
        extra = ["-cues_to_front", "1"]
    cmd = [
        ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", src,
        *codec, "-b:a", bitrate, *extra, str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def closed_port() -> int:
    """A loopback port with no listener (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        conn, addr = super().get_request()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        return conn, addr

    def handle_error(self, request, client_address) -> None:  # clients hang up: quiet
        pass


class FaultServer(contextlib.AbstractContextManager):
    """Serve ``media_dir`` on ``127.0.0.1`` (free port) with per-YTID faults.

    Parameters
    ----------
    media_dir : str or Path
        Folder of ``{ytid}.{ext}`` / ``default.{ext}`` files.
    stall : float
        Seconds the ``stall`` mode waits before answering.
    rate : float, optional
        Pace bodies at about this many bytes per second (8 KiB chunks), like a real link: a
        client that hangs up mid-body then leaves at most a chunk or two unread, so the bytes
        counted are the bytes it needed. ``None``: as fast as the socket takes them.
    """

    def __init__(self, media_dir: str | Path, *, stall: float = 6.0, rate: float | None = None):
        self.media_dir = Path(media_dir)
        self.stall = stall
        self.rate = rate
        self.requests: Counter[str] = Counter()
        self.ranged: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        # what flakyN/cutN count: never reset, so a YTID heals for good
        self._all: Counter[str] = Counter()
        self._all_ranged: Counter[str] = Counter()
        self.log: list[list] = []  # [ytid, Range header, body bytes sent]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dead_port = closed_port()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> FaultServer:
        handler = _make_handler(self)
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_template(self, ext: str = "m4a") -> str:
        return f"{self.base_url}/{{ytid}}.{ext}"

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self.bytes_sent.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.ranged.clear()
            self.bytes_sent.clear()
            self.log.clear()

    def heal(self, ytid: str) -> None:
        """Let a ``flakyN`` or ``goneN`` YTID be served from now on (its failures are used
        up)."""
        with self._lock:
            self._all[ytid] = max(self._all[ytid], 10**9)

    # -- bookkeeping ----------------------------------------------------------------------
    def _count(self, ytid: str, ranged: bool) -> int:
        with self._lock:
            self.requests[ytid] += 1
            self._all[ytid] += 1
            if ranged:
                self.ranged[ytid] += 1
                self._all_ranged[ytid] += 1
            return self._all[ytid]

    def _sent(self, ytid: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[ytid] += n


def _mode(ytid: str) -> tuple[str, int]:
    token = ytid.split("_", 1)[0]
    m = re.fullmatch(r"([a-z]+?)(\d*)", token)
    if not m:
        return "ok", 0
    return m.group(1), int(m.group(2) or 0)


_HTML_NOT_MEDIA = b"<!doctype html><html><body><h1>Welcome</h1><p>Nothing here.</p></body></html>"


def _make_handler(srv: FaultServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FaultServer/1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

        # -- helpers --------------------------------------------------------------------
        def _status(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
            body = body or f"<html><body>HTTP {code}</body></html>".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _write(self, ytid: str, data: bytes, *, chunk: int = 16384, pause: float = 0) -> bool:
            view = memoryview(data)
            for i in range(0, len(view), chunk):
                if srv._stop.is_set():
                    return False
                part = view[i : i + chunk]
                try:
                    self.wfile.write(part)
                except OSError:
                    return False
                srv._sent(ytid, len(part))
                self._entry[2] += len(part)
                if pause:
                    time.sleep(pause)
            return True

        def _serve(self, head: bool) -> None:
            name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
            stem, dot, ext = name.rpartition(".")
            ytid = stem if dot else name
            ext = "." + ext if dot else ""
            rng = self.headers.get("Range")
            n = srv._count(ytid, bool(rng))
            mode, arg = _mode(ytid)
            entry = [ytid, rng or "", 0]
            with srv._lock:
                srv.log.append(entry)
            self._entry = entry

            if mode == "e":
                code = arg or 500
                hdr = {"Retry-After": "1"} if code in (429, 503) else {}
                return self._status(code, headers=hdr)
            if mode == "flaky" and n <= (arg or 1):
                return self._status(503, headers={"Retry-After": "0"})
            if mode == "gone" and n <= (arg or 1):
                return self._status(404)
            if mode == "stall":
                srv._stop.wait(srv.stall)
                self.close_connection = True
                return
            if mode == "refused":
                target = f"http://127.0.0.1:{srv._dead_port}/{name}"
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "reset":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                return
            if mode == "html":
                return self._status(200, _HTML_NOT_MEDIA)

            if mode == "fake":
                data = _HTML_NOT_MEDIA * 50
                ctype = _CTYPES.get(ext, "application/octet-stream")
            else:
                f = srv.media_dir / name
                if not f.is_file():
                    f = srv.media_dir / f"default{ext}"
                if not f.is_file():
                    return self._status(404)
                data = f.read_bytes()
                ctype = _CTYPES.get(ext, "application/octet-stream")

            size = len(data)
            lo, hi = 0, size - 1
            partial = False
            if rng:
                m = _RANGE.match(rng.strip())
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        lo = int(m.group(1))
                        hi = int(m.group(2)) if m.group(2) else size - 1
                    else:  # suffix range
                        lo = max(0, size - int(m.group(2)))
                    hi = min(hi, size - 1)
                    if lo >= size or lo > hi:
                        return self._status(416, headers={"Content-Range": f"bytes */{size}"})
                    partial = True
            body = data[lo : hi + 1]
            self.send_response(206 if partial else 200)
            self.send_header("Content-Type", ctype)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if partial:
                self.send_header("Content-Range", f"bytes {lo}-{hi}/{size}")
            self.end_headers()
            if head:
                return
            cut = None
            if mode == "trunc":
                cut = len(body) // 3
            elif mode == "cut" and partial and srv._all_ranged[ytid] <= (arg or 1):
                cut = len(body) // 4
            if cut is not None:
                self._write(ytid, body[:cut])
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if mode == "slow":
                self._write(ytid, body, chunk=4096, pause=0.02)
            elif srv.rate:
                self._write(ytid, body, chunk=8192, pause=8192 / srv.rate)
            else:
                self._write(ytid, body)

    return Handler
