"""CPU spent turning ECR `DescribeImages` answers into push times: botocore's default parser against the
watcher's (`watcher.pollers.ecr.utc_timestamp`, installed through botocore's `timestamp_parser` hook).

No network and no server: PAGES bodies of 1,000 images each are made in ECR's JSON 1.1 wire format (push
times as epoch seconds with a fraction, as AWS sends them), then parsed against botocore's own ECR model,
alternating the two parsers RUNS times each, in this one process:

- **before**: botocore's default parser (`dateutil` with the local zone), then each push time to UTC as
  the poller did (`astimezone(UTC)`);
- **after**: the parser the ECR poller's client now has (aware UTC straight from the epoch seconds);
- **after, whole listing**: the same, plus the poller's own per-image work (`EcrPoller.tags`: checks of
  tags and digests, the tag states), to show what is left per entry.

Reports the median CPU seconds (`time.process_time`) of each and the ratio after ÷ before; exits 1 when
the two parsers disagree on any push time. Run from the repository root:
`.venv/bin/python -m benchmarks.ecr_parsing` (100 pages = 100k entries, 5 runs each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.parsers import ResponseParserFactory

from watcher.pollers import poller_for
from watcher.pollers.ecr import EcrPoller, utc_timestamp
from watcher.registrations.forms import build_spec

ACCOUNT = "123456789012"
PAGE = 1000
Parse = Callable[[bytes], dict[str, Any]]


def bodies(pages: int) -> list[bytes]:
    """`pages` DescribeImages answers of 1,000 tagged images each, as ECR sends them."""
    out = []
    for p in range(pages):
        images = []
        for i in range(PAGE):
            n = p * PAGE + i
            images.append(
                {
                    "registryId": ACCOUNT,
                    "repositoryName": f"team/app-{p}",
                    "imageDigest": f"sha256:{n:064x}",
                    "imageTags": [f"v{n}", f"build-{n}"] if n % 4 == 0 else [f"v{n}"],
                    "imageSizeInBytes": 31_457_280 + n,
                    "imagePushedAt": 1_700_000_000 + n * 1.001 + 0.123456,
                    "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactMediaType": "application/vnd.oci.image.config.v1+json",
                }
            )
        out.append(json.dumps({"imageDetails": images, "nextToken": f"t{p}"}).encode())
    return out


def parser(timestamp_parser: Callable[[Any], datetime] | None) -> Parse:
    model = botocore.session.get_session().get_service_model("ecr")
    shape = model.operation_model("DescribeImages").output_shape
    factory = ResponseParserFactory()
    if timestamp_parser is not None:
        factory.set_parser_defaults(timestamp_parser=timestamp_parser)
    json_parser = factory.create_parser(model.protocol)

    def parse(body: bytes) -> dict[str, Any]:
        parsed: dict[str, Any] = json_parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
        return parsed

    return parse


def before(pages: list[bytes], parse: Parse) -> list[datetime]:
    """botocore's default parser, then each push time to UTC, as the poller did."""
    out: list[datetime] = []
    for body in pages:
        for image in parse(body)["imageDetails"]:
            out.append(image["imagePushedAt"].astimezone(UTC))
    return out


def after(pages: list[bytes], parse: Parse) -> list[datetime]:
    out: list[datetime] = []
    for body in pages:
        out.extend(image["imagePushedAt"] for image in parse(body)["imageDetails"])
    return out


def whole_listing(pages: list[bytes], parse: Parse) -> int:
    """The poller's `tags()` over every page (parsed with `parse`), without a network."""
    poller = poller_for(
        build_spec({"name": "bench", "provider": "ecr", "url": f"https://{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"})
    )
    assert isinstance(poller, EcrPoller)
    queue = list(pages)

    def answer(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        page = parse(queue.pop(0))
        if not queue:
            page.pop("nextToken", None)
        return page

    poller._invoke = answer  # type: ignore[method-assign]
    tags = asyncio.run(poller.tags("team/app", lambda _tag: True))
    return len(tags or {})


def cpu(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--pages", type=int, default=100, help="pages of 1,000 images (default 100: 100k entries)")
    args.add_argument("--runs", type=int, default=5)
    opts = args.parse_args(argv)
    pages = bodies(opts.pages)
    default, ours = parser(None), parser(utc_timestamp)
    if before(pages[:1], default) != after(pages[:1], ours):
        print("the two parsers disagree on a push time", file=sys.stderr)
        return 1
    times: dict[str, list[float]] = {"before": [], "after": [], "after, whole listing": []}
    for _ in range(opts.runs):  # alternating, so a busy moment costs both
        times["before"].append(cpu(lambda: before(pages, default)))
        times["after"].append(cpu(lambda: after(pages, ours)))
        times["after, whole listing"].append(cpu(lambda: whole_listing(pages, ours)))
    entries = opts.pages * PAGE
    print(f"{entries:,} DescribeImages entries, {opts.runs} runs each, Python {platform.python_version()}")
    print(f"{'parser':24} {'median cpu s':>12} {'µs/entry':>9}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:24} {median:12.3f} {median / entries * 1e6:9.2f}")
    ratio = statistics.median(times["after"]) / statistics.median(times["before"])
    print(f"after ÷ before: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
