"""A real OCI registry (CNCF Distribution) for integration tests, plus a client.

``RegistryServer`` runs Debian's ``docker-registry`` binary on a loopback port
with filesystem storage in a temporary directory, in one of three modes:
anonymous, htpasswd basic auth, or token auth against our ``TokenServer``.
``RegistryClient`` is a deliberately small synchronous httpx client that lets
tests push, retag and delete images the way a real CI would, so ``watcher``
is exercised against real registry behaviour rather than mocks.
"""

from __future__ import annotations

import atexit
import base64
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import bcrypt
import httpx

from tests.support.processes import stop_process
from tests.support.servers import ClosesOnExit

if TYPE_CHECKING:
    from tests.support.token_server import TokenServer

__all__ = [
    "ALL_MANIFEST_TYPES",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "RegistryClient",
    "RegistryError",
    "RegistryServer",
    "RegistryStartError",
    "free_port",
    "seed_layer",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)

RegistryMode = Literal["anonymous", "basic", "token"]
ImageFormat = Literal["oci", "docker"]

REGISTRY_BINARY = "docker-registry"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryStartError(RuntimeError):
    """The registry process died or never answered; carries its log tail."""


class RegistryError(RuntimeError):
    """An unexpected registry (or token server) answer in ``RegistryClient``."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        self.status_code: int | None = response.status_code if response is not None else None
        self.body: str = response.text if response is not None else ""
        detail = f" -> HTTP {self.status_code}: {self.body[:500]}" if response is not None else ""
        super().__init__(message + detail)


# Safety net: anything still running when the interpreter exits is stopped,
# even if a fixture finaliser never ran (e.g. KeyboardInterrupt mid-setup).
_LIVE: weakref.WeakSet[RegistryServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class RegistryServer(ClosesOnExit):
    """``docker-registry serve`` in a subprocess, on ``127.0.0.1:<port>``.

    Starts on construction and waits until ``/v2/`` answers.  ``stop()`` and
    ``start()`` keep the same port and storage, so a test can take the
    registry down mid-test and bring it back with its content intact.  Pass
    ``htpasswd`` (user -> password) for basic auth or ``token_server`` for
    token auth; neither means anonymous.  ``close()`` also deletes the
    temporary directory when the server created it.
    """

    def __init__(
        self,
        *,
        htpasswd: Mapping[str, str] | None = None,
        token_server: TokenServer | None = None,
        root: Path | None = None,
        port: int | None = None,
        binary: str = REGISTRY_BINARY,
        startup_timeout: float = 20.0,
        notifications: Mapping[str, Any] | None = None,
        every_address: bool = False,
    ) -> None:
        if htpasswd is not None and token_server is not None:
            raise ValueError("choose htpasswd or token_server, not both")
        path = shutil.which(binary)
        if path is None:
            raise RegistryStartError(f"{binary!r} not found; install Debian's docker-registry package")
        self.binary = path
        self.mode: RegistryMode = (
            "token" if token_server is not None else "basic" if htpasswd is not None else "anonymous"
        )
        self.htpasswd = dict(htpasswd) if htpasswd is not None else None
        self.token_server = token_server
        #: the config's `notifications` section (e.g. an endpoint a webhook test receives at), or None
        self.notifications = dict(notifications) if notifications is not None else None
        #: listen on every address of the port, so each of 127.0.0.0/8 reaches it as its own host (a benchmark's
        #: many registries); otherwise only on 127.0.0.1
        self.every_address = every_address
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="watcher-registry-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.root / "storage"
        self.config_path = self.root / "config.yml"
        self.log_path = self.root / "registry.log"
        self.port = port if port is not None else free_port()
        self._port_fixed = port is not None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._write_auth_files()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """``host:port`` as used in image references (``HOST/repo:tag``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- configuration -----------------------------------------------------

    def _write_auth_files(self) -> None:
        if self.htpasswd is not None:
            # Cost 4 (bcrypt's minimum): the registry runs bcrypt on *every*
            # request, and the default cost 12 makes each one take ~0.25 s.
            lines = [
                f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
                for user, pw in self.htpasswd.items()
            ]
            (self.root / "htpasswd").write_text("\n".join(lines) + "\n")
        if self.token_server is not None:
            (self.root / "token-root.pem").write_bytes(self.token_server.cert_pem)

    def config(self) -> dict[str, Any]:
        """The Distribution config; JSON is valid YAML, so it is written as JSON."""
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "error", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f":{self.port}" if self.every_address else self.host,
                "secret": "watcher-tests-not-a-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.htpasswd is not None:
            cfg["auth"] = {"htpasswd": {"realm": "watcher-test", "path": str(self.root / "htpasswd")}}
        elif self.token_server is not None:
            ts = self.token_server
            cfg["auth"] = {
                "token": {
                    "realm": ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(self.root / "token-root.pem"),
                }
            }
        if self.notifications is not None:
            cfg["notifications"] = self.notifications
        return cfg

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) the registry and wait until ``/v2/`` answers."""
        if self._closed:
            raise RegistryStartError("registry server was closed")
        if self.running:
            return
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            self.config_path.write_text(json.dumps(self.config(), indent=2))
            # REGISTRY_* variables override the config file: keep them out.
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            _LIVE.add(self)
            try:
                self._wait_ready()
            except RegistryStartError:
                self.stop()
                lost_port = "address already in use" in self.log_tail()
                if attempt + 1 < attempts and lost_port:
                    self.port = free_port()  # another process took it: pick anew
                    continue
                raise
            # From now on the port is part of the test's world: keep it.
            self._port_fixed = True
            return

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RegistryStartError(f"registry exited ({code}):\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}/v2/", timeout=1.0)
                return  # any HTTP status means it is serving
            except httpx.TransportError:
                time.sleep(0.05)
        raise RegistryStartError(
            f"registry not answering on {self.url} after {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the registry's own log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Terminate the registry and wait for it; storage and port are kept."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process(proc)
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop for good and remove the temporary directory if we made it."""
        self.stop()
        self._closed = True
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __repr__(self) -> str:
        return f"RegistryServer({self.url}, mode={self.mode}, running={self.running})"


_ACTION_ORDER = {"pull": 0, "push": 1, "delete": 2}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def seed_layer(text: str) -> tuple[bytes, bytes]:
    """A one-file layer holding `text`: (its tar, the tar gzipped), both depending only on `text`."""
    payload = text.encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("seed.txt")
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return raw.getvalue(), gzip.compress(raw.getvalue(), mtime=0)


def _image_blobs(seed: str, platform: str) -> tuple[bytes, bytes]:
    """A valid (config, gzipped layer) pair whose bytes depend only on the seed."""
    raw, layer = seed_layer(f"watcher test image, seed={seed}\n")
    os_name, _, arch = platform.partition("/")
    config = {
        "architecture": arch or "amd64",
        "os": os_name or "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Labels": {"org.watcher.test.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [_sha256(raw)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "watcher tests"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode(), layer


class RegistryClient(ClosesOnExit):
    """Minimal test-side registry client (push, retag, delete, inspect).

    Authentication is lazy, like real clients: a request goes out with what
    we have; on a 401 the ``WWW-Authenticate`` challenge decides between
    Basic (send credentials from now on) and Bearer (fetch a token for the
    challenged scope from its realm, cache it per repository, retry once).
    Failures raise ``RegistryError`` carrying the HTTP status.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.tokens_fetched = 0
        self._http = httpx.Client(timeout=timeout)
        self._use_basic = False
        self._tokens: dict[str, str] = {}
        self._scopes: dict[str, dict[str, list[str]]] = {}

    def close(self) -> None:
        self._http.close()

    # -- transport and auth ------------------------------------------------

    def _basic_header(self) -> str:
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        key: str,
        headers: Mapping[str, str] | None,
        content: bytes | None,
    ) -> httpx.Response:
        hdrs = dict(headers or {})
        if key in self._tokens:
            hdrs["Authorization"] = f"Bearer {self._tokens[key]}"
        elif self._use_basic:
            hdrs["Authorization"] = self._basic_header()
        target = url if isinstance(url, httpx.URL) else f"{self.base_url}{url}"
        return self._http.request(method, target, headers=hdrs, content=content)

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        key: str = "",
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send, answering one auth challenge; ``url`` is a path or absolute URL.

        ``key`` names the token cache slot (``repository:NAME`` etc.).
        """
        resp = self._send(method, url, key, headers, content)
        if resp.status_code != 401:
            return resp
        scheme, params = _parse_challenge(resp.headers.get("www-authenticate", ""))
        if scheme == "basic" and self.username is not None and not self._use_basic:
            self._use_basic = True
        elif scheme == "bearer" and "realm" in params:
            params["scope"] = self._widen(key, params.get("scope", ""))
            self._tokens[key] = self._fetch_token(params)
        else:
            return resp
        return self._send(method, url, key, headers, content)

    def _widen(self, key: str, scope: str) -> str:
        """Ask for what was challenged plus what this slot already had.

        Distribution challenges each request for just what it needs (``pull``,
        ``pull,push``, ``delete``); asking for the union keeps one token per
        repository valid for a whole push/retag/delete sequence.  Actions are
        put in a fixed order because Distribution lists them in Go map order
        (``push,pull`` or ``pull,push`` at random), and tests compare scopes.
        """
        known = self._scopes.setdefault(key, {})
        for item in scope.split():
            resource, _, actions = item.rpartition(":")
            merged = known.setdefault(resource, [])
            merged += [a for a in actions.split(",") if a and a not in merged]
            merged.sort(key=lambda a: (_ACTION_ORDER.get(a, len(_ACTION_ORDER)), a))
        return " ".join(f"{res}:{','.join(acts)}" for res, acts in known.items())

    def _fetch_token(self, challenge: Mapping[str, str]) -> str:
        query: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge:
            query.append(("service", challenge["service"]))
        query += [("scope", s) for s in challenge.get("scope", "").split() if s]
        headers = {"Authorization": self._basic_header()} if self.username is not None else {}
        resp = self._http.get(challenge["realm"], params=query, headers=headers)
        if resp.status_code != 200:
            raise RegistryError(f"token request to {challenge['realm']} failed", resp)
        data = resp.json()
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str):
            raise RegistryError("token response without token", resp)
        self.tokens_fetched += 1
        return token

    @staticmethod
    def _expect(resp: httpx.Response, what: str, *statuses: int) -> httpx.Response:
        if resp.status_code not in statuses:
            raise RegistryError(what, resp)
        return resp

    # -- blobs and manifests -----------------------------------------------

    def upload_blob(self, repo: str, data: bytes) -> str:
        """POST an upload session, then PUT the bytes with ``?digest=``."""
        digest = _sha256(data)
        key = f"repository:{repo}"
        resp = self._expect(
            self.request("POST", f"/v2/{repo}/blobs/uploads/", key=key),
            f"start blob upload to {repo}",
            202,
        )
        location = httpx.URL(self.base_url).join(resp.headers["location"])
        resp = self._expect(
            self.request(
                "PUT",
                location.copy_merge_params({"digest": digest}),
                key=key,
                headers={"Content-Type": "application/octet-stream"},
                content=data,
            ),
            f"finish blob upload {digest} to {repo}",
            201,
        )
        if resp.headers.get("docker-content-digest", digest) != digest:
            raise RegistryError(f"registry stored blob under another digest than {digest}", resp)
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", key=f"repository:{repo}")
        return self._expect(resp, f"get blob {digest} from {repo}", 200).content

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT manifest bytes; returns the digest, checked against the registry's."""
        digest = _sha256(body)
        resp = self._expect(
            self.request(
                "PUT",
                f"/v2/{repo}/manifests/{reference}",
                key=f"repository:{repo}",
                headers={"Content-Type": media_type},
                content=body,
            ),
            f"put manifest {repo}:{reference}",
            201,
        )
        served = resp.headers.get("docker-content-digest")
        if served != digest:
            raise RegistryError(f"Docker-Content-Digest {served} != computed {digest}", resp)
        return digest

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest, by tag or digest."""
        resp = self._expect(
            self.request(
                "GET",
                f"/v2/{repo}/manifests/{reference}",
                key=f"repository:{repo}",
                headers={"Accept": _ACCEPT},
            ),
            f"get manifest {repo}:{reference}",
            200,
        )
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return resp.content, media_type, _sha256(resp.content)

    def digest(self, repo: str, reference: str) -> str:
        """The manifest digest a tag points at (HEAD, ``Docker-Content-Digest``)."""
        resp = self._expect(
            self.request(
                "HEAD",
                f"/v2/{repo}/manifests/{reference}",
                key=f"repository:{repo}",
                headers={"Accept": _ACCEPT},
            ),
            f"resolve {repo}:{reference}",
            200,
        )
        return resp.headers["docker-content-digest"]

    def tags(self, repo: str) -> list[str]:
        """Tags of a repository; an unknown repository has none."""
        resp = self.request("GET", f"/v2/{repo}/tags/list", key=f"repository:{repo}")
        if resp.status_code == 404:
            return []
        tags = self._expect(resp, f"list tags of {repo}", 200).json().get("tags")
        return sorted(tags or [])

    def catalog(self) -> list[str]:
        resp = self._expect(self.request("GET", "/v2/_catalog", key="registry:catalog"), "catalog", 200)
        return list(resp.json().get("repositories") or [])

    # -- image operations --------------------------------------------------

    def push_image(
        self,
        repo: str,
        tag: str,
        *,
        seed: str | None = None,
        media_type: ImageFormat = "oci",
        platform: str = "linux/amd64",
    ) -> str:
        """Push a tiny one-layer image and return its manifest digest.

        The same ``seed`` (and format/platform) always gives the same digest;
        no seed gives a fresh random image, i.e. a new digest for the tag.
        """
        config, layer = _image_blobs(seed if seed is not None else secrets.token_hex(16), platform)
        config_digest = self.upload_blob(repo, config)
        layer_digest = self.upload_blob(repo, layer)
        if media_type == "oci":
            manifest_type = OCI_MANIFEST
            config_type = "application/vnd.oci.image.config.v1+json"
            layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
        else:
            manifest_type = DOCKER_MANIFEST
            config_type = "application/vnd.docker.container.image.v1+json"
            layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": len(layer)}],
        }
        return self.put_manifest(repo, tag, json.dumps(manifest, indent=2).encode(), manifest_type)

    def push_index(
        self,
        repo: str,
        tag: str,
        child_digests: Sequence[str],
        *,
        platforms: Sequence[str] | None = None,
    ) -> str:
        """Push an OCI image index over manifests already in ``repo``.

        Each entry's platform comes from ``platforms`` or, by default, from
        the child's image config (as pushed by ``push_image``).
        """
        entries: list[dict[str, Any]] = []
        for i, child in enumerate(child_digests):
            body, child_type, _ = self.get_manifest(repo, child)
            if platforms is not None:
                platform = platforms[i]
            else:
                config_digest = json.loads(body)["config"]["digest"]
                config = json.loads(self.get_blob(repo, config_digest))
                platform = f"{config['os']}/{config['architecture']}"
            os_name, _, arch = platform.partition("/")
            entries.append(
                {
                    "mediaType": child_type,
                    "digest": child,
                    "size": len(body),
                    "platform": {"architecture": arch, "os": os_name},
                }
            )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return self.put_manifest(repo, tag, json.dumps(index, indent=2).encode(), OCI_INDEX)

    def retag(self, repo: str, source_tag: str, new_tag: str) -> str:
        """Point ``new_tag`` at the same manifest (same bytes, so same digest)."""
        body, media_type, _ = self.get_manifest(repo, source_tag)
        return self.put_manifest(repo, new_tag, body, media_type)

    def delete(self, repo: str, tag: str) -> str:
        """Delete the manifest ``tag`` points at and return its digest.

        Distribution deletes by digest (``DELETE /v2/<name>/manifests/<digest>``),
        so *every* tag pointing at that digest disappears, not just ``tag``.
        """
        digest = self.digest(repo, tag)
        self._expect(
            self.request("DELETE", f"/v2/{repo}/manifests/{digest}", key=f"repository:{repo}"),
            f"delete {repo}@{digest}",
            202,
        )
        return digest
