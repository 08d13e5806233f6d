"""httpcore on asyncio's own transports (`watcher.registry.aiostream`): plain and TLS connections to the real
registry, kept alive and read to the end, and a TLS failure still seen as one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from watcher import errors
from watcher.registry.oci import OciClient


def tls_proxy(registry: RegistryEnv, tmp_path: Path) -> FaultProxy:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    proxy = FaultProxy(registry.url, tls_cert=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return proxy


async def list_twice(client: OciClient, repository: str) -> tuple[list[object] | None, list[object] | None]:
    try:
        await client.ping()
        return await client.tags(repository), await client.tags(repository)
    finally:
        await client.aclose()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_registry_is_read_over_plain_and_tls_connections(
    watcher: object, registry: RegistryEnv, unique_repo: str, tmp_path: Path, scheme: str
) -> None:
    registry.client.push_image(unique_repo, "v1")
    registry.client.push_image(unique_repo, "v2")
    if scheme == "http":
        client = OciClient(registry.url)
        listed = asyncio.run(list_twice(client, unique_repo))
    else:
        proxy = tls_proxy(registry, tmp_path)
        try:
            client = OciClient(proxy.url, verify=str(tmp_path / "ca.pem"))
            listed = asyncio.run(list_twice(client, unique_repo))
        finally:
            proxy.close()
    assert listed == (["v1", "v2"], ["v1", "v2"])
    assert client.requests == 3


def test_an_untrusted_certificate_is_a_tls_error(watcher: object, registry: RegistryEnv, tmp_path: Path) -> None:
    proxy = tls_proxy(registry, tmp_path)
    try:
        with pytest.raises(errors.TLSError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            asyncio.run(list_twice(OciClient(proxy.url), "any/thing"))
    finally:
        proxy.close()
