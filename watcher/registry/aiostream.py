"""httpcore's network streams straight on asyncio's transports, without AnyIO in between.

httpcore talks to sockets through AnyIO by default: every read and write opens a cancel scope and a
timeout, and before each request the pool asks every idle connection whether its socket is readable
(a `poll()` system call behind several layers of attribute lookups). Together that was a large part of a
steady poll's CPU. Here a connection is an asyncio transport feeding a small protocol that buffers what
arrives: a read takes from the buffer (waiting, with `asyncio.timeout`, only when it is empty), and
"is the idle connection readable" is whether anything arrived or the peer closed, known without asking
the kernel. Failures come as httpcore's own exceptions (the cause kept, so a TLS failure is still seen
as one), as with AnyIO.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

#: past this many bytes buffered and not yet read, the transport stops reading from the socket
HIGH_WATER = 256 * 1024


class _Buffered(asyncio.Protocol):
    """What the connection received and not yet read, and how it ended."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost: BaseException | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and self.transport is not None and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: an HTTP/1.1 client has nothing to say after the server's EOF

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.lost = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_for_data(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self._paused_reading and len(self.buffer) < HIGH_WATER // 2 and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def drain(self) -> None:
        if self._paused_writing and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection (TCP, or TLS over it) as httpcore reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Buffered) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof and not protocol.closed:
            try:
                async with asyncio.timeout(timeout):
                    while not protocol.buffer and not protocol.eof and not protocol.closed:
                        await protocol.wait_for_data()
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading from the server") from None
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.lost is not None:
            raise httpcore.ReadError(str(protocol.lost) or type(protocol.lost).__name__) from protocol.lost
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._protocol.closed or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._transport.write(buffer)
            async with asyncio.timeout(timeout):
                await self._protocol.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the server") from None
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:  # pragma: no cover - only when the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection with something to read has been closed by the server
            return bool(self._protocol.buffer) or self._protocol.eof or self._protocol.closed
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connects with asyncio itself (`loop.create_connection`); TCP_NODELAY is asyncio's default."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Buffered, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            if sock is not None:
                sock.setsockopt(*option)
        assert isinstance(transport, asyncio.Transport) and isinstance(protocol, _Buffered)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - registries are reached over TCP
        raise httpcore.ConnectError("unix sockets are not used for registries")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
