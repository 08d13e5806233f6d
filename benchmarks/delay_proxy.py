"""A reverse proxy that adds a fixed delay to every request, to make a loopback registry look remote.

Real registries are tens of milliseconds away; a registry on 127.0.0.1 answers in well under one. This
proxy listens on a free loopback port, sleeps `--delay-ms` before forwarding each request to the real
registry, and relays the answer unchanged, with HTTP/1.1 keep-alive on both sides (one upstream
connection per client connection), so a client's concurrency is what decides how long a poll takes.

`GET /_proxy/stats` is answered by the proxy itself (never forwarded): the requests it has forwarded, by
method and kind, so a benchmark can check that two clients made the same requests, and the seconds they
spent in the proxy, summed (divided by the wall time: how many a client kept in flight on average),
and when the first arrived and the last was answered (`time.monotonic()`, the same clock in every process
on Linux). `POST /_proxy/reset` zeroes them.

Run: `python -m benchmarks.delay_proxy --upstream http://127.0.0.1:5000 --delay-ms 20`; it prints
`listening http://127.0.0.1:PORT` on its first line of output once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

NO_BODY_STATUS = frozenset({204, 304})


class Stats:
    """Requests forwarded, by kind (`GET catalog`, `GET tags/list`, `HEAD manifests`, `GET other`, ...)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.busy_seconds = 0.0  # summed over requests: from the request head read to the response sent
        self.first_start = 0.0  # time.monotonic() (system-wide on Linux) the first request arrived
        self.last_end = 0.0  # ... and the last response was sent

    def count(self, method: str, path: str, started: float, ended: float) -> None:
        self.by_kind[f"{method} {kind_of(path)}"] += 1
        self.busy_seconds += ended - started
        self.first_start = min(self.first_start or started, started)
        self.last_end = max(self.last_end, ended)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": sum(self.by_kind.values()),
                "by_kind": dict(self.by_kind),
                "busy_seconds": self.busy_seconds,
                "first_start": self.first_start,
                "last_end": self.last_end,
            }
        ).encode()


def kind_of(path: str) -> str:
    """What an OCI Distribution request path asks for, without the repository name."""
    path = path.split("?", 1)[0]
    if path.startswith("/v2/_catalog"):
        return "catalog"
    for kind in ("/tags/list", "/manifests/", "/blobs/uploads/", "/blobs/"):
        if path.startswith("/v2/") and kind in path:
            return kind.strip("/")
    return "ping" if path in ("/v2", "/v2/") else "other"


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    """The first line and the (lower-cased) headers of a request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> bool:
    """Copy a message body framed by Content-Length or chunked encoding; False if framed by EOF."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                writer.write(await _trailer(reader))
                return True
            writer.write(await reader.readexactly(size + 2))
    length = headers.get("content-length")
    if length is not None:
        if int(length):
            writer.write(await reader.readexactly(int(length)))
        return True
    return False


async def _trailer(reader: asyncio.StreamReader) -> bytes:
    """The trailer section after the last chunk, up to and including the final empty line."""
    out = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        out += line
        if line == b"\r\n":
            return out


class DelayProxy:
    """Forwards each request to `upstream` after sleeping `delay` seconds."""

    def __init__(self, upstream: str, delay: float) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT], not {upstream!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.delay = delay
        self.stats = Stats()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await client_r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection(self.host, self.port)
                if not await self._exchange(head, client_r, client_w, upstream):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            client_w.close()
            if upstream is not None:
                upstream[1].close()

    async def _exchange(
        self,
        head: bytes,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        """One request and its response; False when the connection must close afterwards."""
        request_line, req_headers = _headers(head)
        method, _, rest = request_line.partition(" ")
        path = rest.rsplit(" ", 1)[0]
        if path.startswith("/_proxy/"):
            return await self._own(method, path, client_w)
        up_r, up_w = upstream
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        up_w.write(head)
        if not await _relay_body(client_r, up_w, req_headers) and method not in ("GET", "HEAD", "DELETE"):
            raise ValueError("request body without framing")
        await up_w.drain()
        while True:
            resp_head = await up_r.readuntil(b"\r\n\r\n")
            status_line, resp_headers = _headers(resp_head)
            status = int(status_line.split(" ", 2)[1])
            client_w.write(resp_head)
            if status >= 200:
                break
        keep = True
        if method != "HEAD" and status not in NO_BODY_STATUS and not await _relay_body(up_r, client_w, resp_headers):
            client_w.write(await up_r.read())  # framed by the end of the connection
            keep = False
        await client_w.drain()
        self.stats.count(method, path, started, time.monotonic())
        closing = "close" in (req_headers.get("connection", "") + resp_headers.get("connection", "")).lower()
        return keep and not closing

    async def _own(self, method: str, path: str, client_w: asyncio.StreamWriter) -> bool:
        if method == "POST" and path == "/_proxy/reset":
            self.stats = Stats()
        body = self.stats.as_json()
        client_w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await client_w.drain()
        return True


async def serve(upstream: str, delay_ms: float, port: int) -> None:
    proxy = DelayProxy(upstream, delay_ms / 1000)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=1 << 20, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", required=True, help="the real registry, http://HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="sleep before forwarding each request")
    parser.add_argument("--port", type=int, default=0, help="loopback port to listen on (0: a free one)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.upstream, args.delay_ms, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
