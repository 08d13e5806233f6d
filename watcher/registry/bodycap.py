"""The cap on one response body (`WATCHER_MAX_BODY_BYTES`), enforced while the body streams in.

A registry may answer with a 600 MB tag list, a chunked body that never ends, or a small gzip stream that
inflates to gigabytes; reading any of them whole would take the worker's memory with it. Bodies are
counted as they arrive, after decompression (which is done here, bounded, for exactly that reason), and
reading stops with one line naming the limit and the setting that raises it. One cap for both HTTP stacks:
`capped_response` for httpx (every client of `watcher.registry.http`), `CappedRaw` for requests (the Azure SDK and
google-auth, through `watcher.registry.policedsession`).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from watcher import errors

if TYPE_CHECKING:
    import urllib3

#: what the httpx clients advertise: the encodings `_Inflater` decodes under the cap
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(errors.BadResponseError):
    """A response body past the cap; reading stopped there."""


def body_too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"response body exceeds {size_text(limit)} (WATCHER_MAX_BODY_BYTES)")


def size_text(count: int) -> str:
    """`32 MiB` for a round number of MiB (or GiB, KiB), else the number of bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


# -- httpx ------------------------------------------------------------------------------------------------
class _Inflater:
    """gzip or deflate, never yielding more than the bytes still allowed plus one (zlib's `max_length`)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
        self._first = True

    def inflate(self, data: bytes, allowed: int) -> bytes:
        try:
            out = self._zlib.decompress(data, allowed + 1)
        except zlib.error:
            if not (self._first and self._encoding == "deflate"):
                raise errors.BadResponseError("the compressed body is corrupt") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # servers sending raw deflate, as httpx allows
            out = self._zlib.decompress(data, allowed + 1)
        self._first = False
        return out

    def flush(self) -> bytes:
        return self._zlib.flush()


class CappedStream(httpx.AsyncByteStream):
    """A response stream that stops after `limit` (decoded) bytes with BodyTooLarge."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, encoding: str | None) -> None:
        self._inner = inner
        self._limit = limit
        self._inflater = _Inflater(encoding) if encoding else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for raw in self._inner:
            chunk = self._inflater.inflate(raw, self._limit - size) if self._inflater else raw
            size += len(chunk)
            if size > self._limit:
                raise body_too_large(self._limit)
            yield chunk
        if self._inflater is not None:
            rest = self._inflater.flush()
            if size + len(rest) > self._limit:
                raise body_too_large(self._limit)
            yield rest

    async def aclose(self) -> None:
        await self._inner.aclose()


def capped_response(response: httpx.Response, limit: int) -> httpx.Response:
    """`response` with its body read through the cap, decoded here (so httpx does not inflate it unbounded)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        response.stream = CappedStream(response.stream, limit, None)  # type: ignore[arg-type]
        return response
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise errors.BadResponseError(f"the body is encoded as {encoding!r}, which was not asked for")
    response.stream = CappedStream(response.stream, limit, "deflate" if encoding == "deflate" else "gzip")  # type: ignore[arg-type]
    del response.headers["content-encoding"]
    response.headers.pop("content-length", None)  # it counted the compressed bytes
    return response


# -- requests ---------------------------------------------------------------------------------------------
class CappedRaw:
    """A urllib3 response whose `stream()` (what requests reads `content` through) stops after `limit`
    decoded bytes with BodyTooLarge; everything else is the response itself."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, limit: int) -> None:
        self.__dict__["_raw"] = raw
        self.__dict__["_limit"] = limit

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        size = 0
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            size += len(chunk)
            if size > self._limit:
                self._raw.close()
                raise body_too_large(self._limit)
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._raw, name, value)
