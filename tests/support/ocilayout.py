"""OCI image layouts written by hand and pushed with `skopeo`, the way a CI pushes what its build made.

A test says exactly what an image is (its config's `created`, platform and labels, its manifest's
annotations, an index's entries) and gets back every digest, so it can compare what the watcher stored
with what was pushed. `skopeo copy --preserve-digests` keeps the bytes, hence the digests, as written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.registry import seed_layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Pushed:
    """A manifest written to the layout: its digest, its bytes' length, and its config's (or None)."""

    digest: str
    size: int
    config: bytes | None = None
    blob_sizes: list[int] = field(default_factory=list)


class Layout:
    """One OCI image layout directory; `image` and `index` write blobs into it, `push` copies a tag of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self._refs: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> dict[str, Any]:
        """Write `data` as a blob; its descriptor without a media type."""
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(
        self,
        *,
        seed: str,
        platform: tuple[str, str, str | None] = ("linux", "amd64", None),
        created: str | None = "2026-11-30T12:34:56Z",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Pushed:
        """A one-layer image whose bytes depend only on its arguments."""
        raw, layer = seed_layer(f"watcher image-meta test, seed={seed}\n")
        os_name, arch, variant = platform
        config: dict[str, Any] = {
            "architecture": arch,
            "os": os_name,
            "config": {"Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
        }
        if variant:
            config["variant"] = variant
        if created is not None:
            config["created"] = created
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **self.blob(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER, **self.blob(layer)}],
        }
        if annotations:
            manifest["annotations"] = annotations
        descriptor = self.blob(json.dumps(manifest, indent=2).encode())
        return Pushed(descriptor["digest"], descriptor["size"], config_bytes, [len(config_bytes), len(layer)])

    def index(self, entries: list[tuple[Pushed, dict[str, Any]]], annotations: dict[str, str] | None = None) -> Pushed:
        """An OCI index over manifests of this layout, each entry with its extra fields (platform, annotations)."""
        manifests = [
            {"mediaType": OCI_MANIFEST, "digest": child.digest, "size": child.size, **extra} for child, extra in entries
        ]
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        if annotations:
            index["annotations"] = annotations
        descriptor = self.blob(json.dumps(index, indent=2).encode())
        return Pushed(descriptor["digest"], descriptor["size"], None, [child.size for child, _ in entries])

    def tag(self, tag: str, pushed: Pushed, *, index: bool = False) -> None:
        """Name `pushed` `tag` in the layout's own index.json."""
        self._refs.append(
            {
                "mediaType": OCI_INDEX if index else OCI_MANIFEST,
                "digest": pushed.digest,
                "size": pushed.size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
        (self.root / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs})
        )

    def push(self, tag: str, destination: str, *, creds: str | None = None) -> None:
        """`skopeo copy --all --preserve-digests oci:LAYOUT:TAG docker://DESTINATION` over plain http."""
        skopeo = shutil.which("skopeo")
        assert skopeo, "skopeo is needed (apt-get install skopeo)"
        command = [skopeo, "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]
        if creds:
            command += ["--dest-creds", creds]
        command += [f"oci:{self.root}:{tag}", f"docker://{destination}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
