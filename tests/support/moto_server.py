"""A real `moto_server` (moto's AWS API server) on a loopback port, and a small ECR client for tests.

moto's ECR speaks the real JSON 1.1 wire protocol, so watcher's boto3 calls go over HTTP exactly as they
would to AWS; tests point boto3 at it through `AWS_ENDPOINT_URL_ECR`. Two moto quirks are handled here:
`put_image` is always given `imageDigest` = sha256 of the manifest (moto computes digests differently
otherwise), and moto ignores `maxResults`, so pagination is tested with botocore's Stubber instead.
moto does not check credentials either: any access key works.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
import httpx

from tests.support.processes import stop_process
from tests.support.registry import free_port

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
REGISTRY_URL = f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class MotoServer:
    """`python -m moto.server` in a subprocess; `reset()` forgets every resource between tests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.url} within {timeout}s: {tail}")

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=5.0).raise_for_status()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_process(self._proc, timeout=5)
        self._proc = None
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def log_tail(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def manifest(seed: str | None = None) -> str:
    """A distinct, well-formed OCI image manifest (no blobs are needed: ECR's API does not check them)."""
    config = hashlib.sha256((seed or secrets.token_hex(8)).encode()).hexdigest()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config}",
                "size": 2,
            },
            "layers": [],
        }
    )


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class EcrSeed:
    """Does to moto's ECR what CI would do to a real one: create repositories, push, retag, delete."""

    def __init__(self, endpoint: str) -> None:
        self.client: Any = boto3.session.Session(
            aws_access_key_id="AKIASEEDSEEDSEEDSEED", aws_secret_access_key="seed", region_name=REGION
        ).client("ecr", endpoint_url=endpoint)

    def create(self, repository: str) -> None:
        self.client.create_repository(repositoryName=repository)

    def push(self, repository: str, tag: str, body: str | None = None) -> str:
        """Push a manifest (a new one unless given) under `tag`; returns its digest."""
        body = body or manifest()
        digest = digest_of(body)
        self.client.put_image(repositoryName=repository, imageManifest=body, imageTag=tag, imageDigest=digest)
        return digest

    def push_untagged(self, repository: str) -> str:
        body = manifest()
        digest = digest_of(body)
        self.client.put_image(repositoryName=repository, imageManifest=body, imageDigest=digest)
        return digest

    def manifest_of(self, repository: str, tag: str) -> str:
        images = self.client.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])["images"]
        return str(images[0]["imageManifest"])

    def retag(self, repository: str, tag: str, new_tag: str) -> str:
        """Put the manifest `tag` points at under `new_tag` too (same digest)."""
        return self.push(repository, new_tag, self.manifest_of(repository, tag))

    def delete_tag(self, repository: str, tag: str) -> None:
        self.client.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": tag}])

    def delete_repository(self, repository: str) -> None:
        self.client.delete_repository(repositoryName=repository, force=True)

    def pushed_at(self, repository: str, tag: str) -> datetime:
        details = self.client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        pushed: datetime = details["imageDetails"][0]["imagePushedAt"]
        return pushed
