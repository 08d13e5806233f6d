"""The README's receiver example is true: its Python, taken from README.md as written, verifies and reads a
real delivery in either CloudEvents mode, and refuses a tampered one."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Watcher
from tests.delivery.test_formats import history, send_all
from tests.support.fixtures import RegistryEnv
from tests.support.servers import BackgroundServer
from watcher.delivery.formats import build
from watcher.delivery.subscriptions import new_secret

README = Path(__file__).resolve().parents[2] / "README.md"
LAST_LINE = 'HTTPServer(("0.0.0.0", 8000), Receiver).serve_forever()'


def receiver_example() -> str:
    """The first Python block under "### Receiving deliveries", without its last line (which serves forever
    on a fixed port: the test serves the example's handler on a free one)."""
    section = README.read_text().split("### Receiving deliveries", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "README.md has no Python example under 'Receiving deliveries'"
    code = found[1].rstrip()
    assert code.endswith(LAST_LINE)
    return code.removesuffix(LAST_LINE)


def test_the_readme_receiver_verifies_and_reads_a_real_delivery(
    watcher: Watcher,
    registry: RegistryEnv,
    unique_repo: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry.client.push_image(unique_repo, "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    digest = registry.client.push_image(unique_repo, "v2")
    assert watcher.cli("poll", "r1").exit_code == 0
    [event] = history(watcher)

    secret = new_secret()
    monkeypatch.setenv("WATCHER_WEBHOOK_SECRET", secret)
    example: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(receiver_example(), str(README), "exec"), example)
    with BackgroundServer(example["Receiver"], name="readme-receiver") as server:
        binary, structured = (
            build(mode, server.url, secret, event) for mode in ("cloudevents", "cloudevents-structured")
        )
        tampered = dataclasses.replace(binary, body=binary.body.replace(b'"v2"', b'"v9"'))
        outcomes = send_all([binary, structured, tampered])
    assert [(o.kind, o.status) for o in outcomes] == [("delivered", 204), ("delivered", 204), ("permanent", 401)]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"dev.cdevents.artifact.published.0.3.0 {event.event_id} {unique_repo}:v2 {digest}"] * 2
