"""Failure classes of the download stage: why a YTID could not be fetched, and what to do.

Every failure is one of :data:`audiosetflow.shard.FAILED`:

``permanent``
    the video is gone: unavailable, private, removed, account terminated, blocked on copyright,
    geo-restricted, HTTP 404/410, no audio stream, source shorter than the segment start. Not
    retried (unless ``download.retry_permanent``).
``auth``
    YouTube wants a signed-in user: "Sign in to confirm you're not a bot", age checks,
    members-only. Not retried while ``download.cookies`` is unset; the reason says to configure
    it, and once it is set they are tried again.
``transient``
    anything that may heal: HTTP 429/403/5xx, timeouts, refused or reset connections, truncated
    bodies, media that decode shorter than the segment, content that is not media, "try again
    later", and errors nobody recognised (nothing is lost by trying again).

Rate limiting (HTTP 429, "try again later", "rate-limited") is transient and flagged as such
(:attr:`Failure.rate_limited`): the stage cools down and stops the shard early. A fault of the
machine (a full disk, ...) is no failure of the YTID: :func:`classify` raises it as
:class:`audiosetflow.errors.MachineError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ..config import redact_text
from ..errors import machine_error
from ..shard import Status

__all__ = ["Failure", "MediaCheckError", "classify", "classify_error"]


class MediaCheckError(RuntimeError):
    """A downloaded file failed verification.

    Attributes
    ----------
    status : Status
        ``transient`` or ``permanent``.
    """

    def __init__(self, message: str, status: Status = Status.TRANSIENT):
        super().__init__(message)
        self.status = Status(status)


@dataclass(frozen=True)
class Failure:
    """The class of one failed attempt.

    Attributes
    ----------
    status : Status
        ``permanent``, ``auth`` or ``transient``.
    reason : str
        One line: the class's label, then the original message.
    rate_limited : bool
        The server asked us to slow down (HTTP 429, "try again later").
    retry_after : float or None
        The server's ``Retry-After`` in seconds, where it sent one.
    """

    status: Status
    reason: str
    rate_limited: bool = False
    retry_after: float | None = None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Patterns on the lower-cased messages of the exception chain, checked in this order.
_RATE_PATTERNS = (
    "too many requests",
    "http error 429",
    "try again later",
    "rate-limit",
    "rate limit",
    "ratelimit",
)
_PERMANENT_PATTERNS = (
    ("private video", "private video"),
    ("video is private", "private video"),
    ("account associated with this video has been terminated", "account terminated"),
    ("account has been terminated", "account terminated"),
    ("has been terminated", "account terminated"),
    ("copyright", "blocked on copyright"),
    ("not available in your country", "geo-restricted"),
    ("blocked it in your country", "geo-restricted"),
    ("geo restrict", "geo-restricted"),
    ("geo-restrict", "geo-restricted"),
    ("from your location", "geo-restricted"),
    ("removed by the uploader", "removed by the uploader"),
    ("has been removed", "video removed"),
    ("violating youtube", "removed for a policy violation"),
    ("video unavailable", "video unavailable"),
    ("video is unavailable", "video unavailable"),
    ("video is no longer available", "video unavailable"),
    ("this video does not exist", "video does not exist"),
    ("this video is not available", "video unavailable"),
    ("uploader has not made this video available", "geo-restricted"),
    ("http error 404", "HTTP 404"),
    ("http error 410", "HTTP 410"),
    ("requested format is not available", "requested format not available"),
    ("no audio stream", "no audio stream"),
    ("source shorter than segment", "source shorter than segment"),
)
_AUTH_PATTERNS = (
    "not a bot",
    "sign in to confirm",
    "confirm your age",
    "age-restricted",
    "age restricted",
    "inappropriate for some users",
    "login required",
    "log in",
    "sign in",
    "members-only",
    "members only",
    "join this channel",
    "use --cookies",
    "cookies",
)
_TRANSIENT_PATTERNS = (
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("connection refused", "connection refused"),
    ("connection reset", "connection reset"),
    ("remote end closed", "connection closed"),
    ("broken pipe", "connection closed"),
    ("incomplete read", "truncated body"),
    ("incompleteread", "truncated body"),
    ("content too short", "truncated body"),
    ("bytes read", "truncated body"),
    ("did not get any data blocks", "truncated body"),
    ("unable to download video data", "media transfer failed"),
    ("temporarily unavailable", "service unavailable"),
    ("http error 5", "server error"),
    ("http error 403", "HTTP 403 (expired URL or throttling)"),
    ("not media", "not media"),
    ("invalid data found", "not media"),
    ("unsupported url", "not media (a web page without media; check download.url_template)"),
    ("ffmpeg exited with code", "ffmpeg could not read the media (not media or broken transfer)"),
    ("decoded", "truncated media"),
    ("name or service not known", "DNS failure"),
    ("temporary failure in name resolution", "DNS failure"),
    ("network is unreachable", "network unreachable"),
)
_AUTH_HINT = "configure download.cookies (a Netscape cookies file of a signed-in browser session)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (cause, context, yt-dlp's exc_info/cause)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop(0)
        if e is None or id(e) in seen or len(seen) > 50:
            continue
        seen.add(id(e))
        yield e
        nested: list[Any] = [getattr(e, "__cause__", None), getattr(e, "__context__", None)]
        ei = getattr(e, "exc_info", None)
        if isinstance(ei, tuple) and len(ei) >= 2:
            nested.append(ei[1])
        nested.append(getattr(e, "cause", None))
        nested.append(getattr(e, "reason", None))  # urllib URLError
        stack.extend(x for x in nested if isinstance(x, BaseException))


def _http_status(e: BaseException) -> int | None:
    for attr in ("status", "code"):
        v = getattr(e, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            name = type(e).__name__
            if "HTTP" in name or "Http" in name or attr == "status":
                return v
    return None


def _retry_after(e: BaseException) -> float | None:
    headers = None
    resp = getattr(e, "response", None)
    if resp is not None:
        headers = getattr(resp, "headers", None)
    if headers is None:
        headers = getattr(e, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except Exception:  # noqa: BLE001 - any odd header object
        return None
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(when.tzinfo or UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _one_line(text: str, limit: int = 240) -> str:
    text = redact_text(_ANSI.sub("", text))  # no proxy password in a reason (ledger, logs)
    text = re.sub(r"^\s*ERROR:\s*", "", text)
    text = re.sub(r";?\s*please report this issue on .*$", "", text, flags=re.S | re.I)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(exc: BaseException, where: str = "") -> Failure:
    """Classify a failed download attempt (see the module docstring for the classes).

    The whole exception chain is inspected (``__cause__``, ``__context__``, yt-dlp's
    ``exc_info`` and ``cause``): an HTTP status of a ``yt_dlp.networking.exceptions.HTTPError``
    where present, the messages otherwise.

    Parameters
    ----------
    exc : BaseException
        What the attempt raised.
    where : str
        The YTID or file, named by a :class:`~audiosetflow.errors.MachineError`.

    Raises
    ------
    audiosetflow.errors.MachineError
        When the failure is a fault of the machine (a full disk, ...), not of the YTID.
    """
    chain = list(_chain(exc))
    msg = _one_line(str(exc)) or type(exc).__name__
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    retry_after = next((r for e in chain if (r := _retry_after(e)) is not None), None)

    for e in chain:  # our own verdict on the media first: ffmpeg's words are about the file
        if isinstance(e, MediaCheckError):
            return Failure(e.status, _one_line(str(e)))
    if (machine := machine_error(exc, where)) is not None:
        raise machine from exc
    status = next((s for e in chain if (s := _http_status(e)) is not None), None)
    if status is None:
        m = re.search(r"http error (\d{3})", text)
        status = int(m.group(1)) if m else None

    if status == 429 or any(p in text for p in _RATE_PATTERNS):
        return Failure(Status.TRANSIENT, f"rate limited: {msg}", True, retry_after)
    # Message patterns for permanent/auth come before the status: YouTube answers some of
    # them with a plain 200 page, and "Private video. Sign in if you've been granted access"
    # must not read as an auth problem.
    for pat, label in _PERMANENT_PATTERNS:
        if pat in text and not (pat.startswith("http error") and status not in (404, 410)):
            if label in ("video unavailable",) and any(p in text for p in _AUTH_PATTERNS[:6]):
                break  # "Video unavailable ... Sign in to confirm your age": auth
            return Failure(Status.PERMANENT, f"{label}: {msg}")
    if any(p in text for p in _AUTH_PATTERNS):
        return Failure(Status.AUTH, f"sign-in required ({_AUTH_HINT}): {msg}")
    if status in (404, 410):
        return Failure(Status.PERMANENT, f"HTTP {status}: {msg}")
    if status == 401:
        return Failure(Status.AUTH, f"HTTP 401 ({_AUTH_HINT}): {msg}")
    if status == 451:
        return Failure(Status.PERMANENT, f"HTTP 451 (blocked): {msg}")
    if status is not None and (status == 403 or status >= 500 or status == 408):
        return Failure(Status.TRANSIENT, f"HTTP {status}: {msg}", False, retry_after)
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return Failure(Status.PERMANENT, f"no such file: {msg}")
        if isinstance(e, TimeoutError | ConnectionError):
            return Failure(Status.TRANSIENT, f"{type(e).__name__}: {msg}", False, retry_after)
    for pat, label in _TRANSIENT_PATTERNS:
        if pat in text:
            return Failure(Status.TRANSIENT, f"{label}: {msg}", False, retry_after)
    if status is not None:
        return Failure(Status.TRANSIENT, f"HTTP {status}: {msg}", False, retry_after)
    return Failure(Status.TRANSIENT, f"unrecognised error: {msg}", False, retry_after)


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Classify a download failure as ``permanent``, ``auth`` or ``transient``.

    The whole exception chain is inspected (``__cause__``, ``__context__``, yt-dlp's
    ``exc_info`` and ``cause``): an HTTP status of a ``yt_dlp.networking.exceptions.HTTPError``
    where present, the messages otherwise (see the module docstring for the classes).

    Returns
    -------
    (status, reason)
        ``reason`` is one line: the class's label, then the original message.
    """
    f = classify(exc)
    return f.status.value, f.reason
