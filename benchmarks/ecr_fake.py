"""A fast loopback ECR API for benchmarks: `DescribeRepositories` and `DescribeImages` in ECR's JSON 1.1
wire format, 1,000 entries a page with `nextToken` paging, every answer generated on the fly.

Nothing is stored per tag, so a million tags cost this process nothing but CPU: repository `r`'s tag `i`
is image number `n = r * TAGS + i`, its digest and push time a function of `n` and of the generation in
which it last moved. `POST /_control {"generation": g, "period": p}` moves on to generation `g`; in
generation `g` the tags with `n % p == g % p` move to new digests (p = 100: 1 % of the tags, spread evenly
over every repository, the costliest way to change 1 %). `GET /_stats` counts the requests by operation.

It runs in its own process (`python -m benchmarks.ecr_fake --port P --repos R --tags T`), so its CPU and
memory count neither in watcher's figures nor in the floor client's. It checks no signatures.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PAGE = 1000
_IMAGE = (
    '{"registryId":"' + ACCOUNT + '","repositoryName":"%s","imageDigest":"sha256:%064x","imageTags":["%s"],'
    '"imageSizeInBytes":%d,"imagePushedAt":%.6f,'
    '"imageManifestMediaType":"application/vnd.oci.image.manifest.v1+json",'
    '"artifactMediaType":"application/vnd.oci.image.config.v1+json"}'
)
_REPOSITORY = (
    '{"repositoryArn":"arn:aws:ecr:' + REGION + ":" + ACCOUNT + ':repository/%s","registryId":"' + ACCOUNT + '",'
    '"repositoryName":"%s","repositoryUri":"' + ACCOUNT + ".dkr.ecr." + REGION + '.amazonaws.com/%s",'
    '"createdAt":1.7E9,"imageTagMutability":"MUTABLE","imageScanningConfiguration":{"scanOnPush":false},'
    '"encryptionConfiguration":{"encryptionType":"AES256"}}'
)


def repository_name(r: int) -> str:
    return f"team-{r // 100:03d}/service-{r:05d}"


def tag_name(i: int) -> str:
    return f"build-{i:05d}"


class Content:
    """The registry's content in one generation: names, digests and push times computed, never stored."""

    def __init__(self, repos: int, tags: int) -> None:
        self.repos, self.tags = repos, tags
        self.generation, self.period = 0, 100
        self.index = {repository_name(r): r for r in range(repos)}
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def moved_in(self, n: int) -> int:
        """The last generation (0: never) in which image `n` moved to a new digest."""
        g, p = self.generation, self.period
        last = g - (g - n) % p
        return last if last > 0 else 0

    def images_page(self, r: int, start: int, count: int) -> str:
        name = repository_name(r)
        base = r * self.tags
        parts = []
        for i in range(start, min(start + count, self.tags)):
            n = base + i
            g = self.moved_in(n)
            parts.append(_IMAGE % (name, n * 1_000_003 + g, tag_name(i), 31_457_280 + i, 1.7e9 + n + g * 0.5 + 0.123))
        return ",".join(parts)

    def count(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1


def answer(content: Content, operation: str, params: dict[str, Any]) -> tuple[int, str]:
    count = max(1, min(int(params.get("maxResults") or PAGE), PAGE))
    start = int(params.get("nextToken") or 0)
    if operation == "DescribeRepositories":
        end = min(start + count, content.repos)
        body = ",".join(_REPOSITORY % ((repository_name(r),) * 3) for r in range(start, end))
        token = f',"nextToken":"{end}"' if end < content.repos else ""
        return 200, '{"repositories":[' + body + "]" + token + "}"
    if operation == "DescribeImages":
        r = content.index.get(str(params.get("repositoryName")))
        if r is None:
            message = f"The repository with name '{params.get('repositoryName')}' does not exist"
            return 400, json.dumps({"__type": "RepositoryNotFoundException", "message": message})
        end = min(start + count, content.tags)
        token = f',"nextToken":"{end}"' if end < content.tags else ""
        return 200, '{"imageDetails":[' + content.images_page(r, start, count) + "]" + token + "}"
    return 400, json.dumps({"__type": "UnknownOperationException", "message": operation})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content = self.server.content
        if self.path == "/_control":
            change = json.loads(raw)
            content.generation = int(change.get("generation", content.generation))
            content.period = int(change.get("period", content.period))
            self._send(200, "{}")
            return
        operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        content.count(operation)
        status, body = answer(content, operation, json.loads(raw or b"{}"))
        self._send(status, body)

    def do_GET(self) -> None:
        self._send(200, json.dumps(dict(self.server.content.requests)))

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, port: int, content: Content) -> None:
        self.content = content
        super().__init__(("127.0.0.1", port), Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client hanging up is not news


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repos", type=int, required=True)
    parser.add_argument("--tags", type=int, required=True)
    opts = parser.parse_args(argv)
    with Server(opts.port, Content(opts.repos, opts.tags)) as server:
        print("ready", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
