"""A fake ECR API: answers `DescribeImages` with the images a test gives it, in ECR's JSON 1.1 wire format.

moto speaks the same protocol, but sends push times as whole seconds; AWS sends epoch seconds with a
fraction (`"imagePushedAt": 1.714564800123E9`), which is what this fake is for. The answer is one page,
whatever the request asks; the requests' targets are recorded.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.servers import BackgroundServer, QuietHandler


class FakeEcrApi(BackgroundServer):
    def __init__(self, images: list[dict[str, Any]]) -> None:
        self.images = images
        self.targets: list[str] = []
        super().__init__(_Handler, name="fake-ecr-api")


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        server: FakeEcrApi = self.owner
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        server.targets.append(target)
        body: dict[str, Any]
        if target.endswith(".DescribeImages"):
            status, body = 200, {"imageDetails": server.images}
        else:
            status, body = 400, {"__type": "UnknownOperationException", "message": target}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
