"""A team's own stream: the `ACL SETUSER` line the README documents, run against a real Redis with
per-workspace streams, lets a workspace's user read (alone or in a consumer group) and acknowledge its own
stream, and nothing else — the other workspace's stream, the relay's keys, any other key or command is
NOPERM."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import Watcher
from tests.outbox.test_workspace_streams import add_workspace, record_in
from tests.support.redis_server import RedisServer
from watcher.outbox.relay import dedupe_key, relay
from watcher.settings import get_settings

README = Path(__file__).parents[2] / "README.md"
DOCUMENTED_STREAM = "watcher:events"


def documented_line() -> str:
    """The one `ACL SETUSER` line of the README's "A team's own stream (Redis ACL)" section."""
    text = README.read_text()
    section = text.split("### A team's own stream (Redis ACL)", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"```text\n(ACL SETUSER [^\n]+)\n```", section)
    assert len(lines) == 1, "the section documents exactly one ACL SETUSER line"
    return lines[0]


def setuser(admin: redis.Redis, stream: str, workspace: str, user: str, password: str) -> None:
    """The documented line for `workspace`'s user, with this installation's stream and a password of its own."""
    words = documented_line().split()
    assert words[:3] == ["ACL", "SETUSER", "team-b"]
    replaced = [
        word.replace(f"~{DOCUMENTED_STREAM}:team-b", f"~{stream}:{workspace}").replace(">CHANGE-ME", f">{password}")
        for word in words[3:]
    ]
    assert f"~{stream}:{workspace}" in replaced and f">{password}" in replaced
    admin.execute_command("ACL", "SETUSER", user, *replaced)


def client_of(server: RedisServer, user: str, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=user, password=password, decode_responses=True)


@pytest.fixture
def acl_redis(watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A Redis of this test's own (its ACL users must not outlive it), per-workspace streams on."""
    server = RedisServer(tmp_path)
    monkeypatch.setenv("WATCHER_REDIS_URL", server.url)
    monkeypatch.setenv("WATCHER_STREAM_PER_WORKSPACE", "true")
    get_settings.cache_clear()
    yield server
    server.stop()


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_a_workspace_user_reads_its_own_stream_and_nothing_else(
    watcher: Watcher, acl_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_workspace(watcher, "team-b")
    ours = record_in(watcher, "team-b", 3)
    theirs = record_in(watcher, "default", 2)
    admin = redis.Redis.from_url(acl_redis.url, decode_responses=True)
    assert relay(admin) == 5
    base = watcher.stream
    own, other = f"{base}:team-b", f"{base}:default"
    # one user per workspace (Redis's own user is named `default`: the workspace `default`'s is not)
    users = {"team-b": ("team-b", secrets.token_hex(16)), "default": ("ws-default", secrets.token_hex(16))}
    for workspace, (user, password) in users.items():
        setuser(admin, base, workspace, user, password)
    team_b = client_of(acl_redis, *users["team-b"])
    team_default = client_of(acl_redis, *users["default"])

    # its own stream: a consumer group is created, read, claimed from and acknowledged; a plain read works
    team_b.xgroup_create(own, "deployer", id="0")
    read: Any = team_b.xreadgroup("deployer", "d1", {own: ">"})
    entries = read[0][1]
    assert [fields["event_id"] for _, fields in entries] == ours
    assert {fields["workspace"] for _, fields in entries} == {"team-b"}
    assert team_b.xack(own, "deployer", entries[0][0]) == 1
    claimed: Any = team_b.xautoclaim(own, "deployer", "d2", 0, "0-0")
    assert [entry_id for entry_id, _ in claimed[1]] == [entry_id for entry_id, _ in entries[1:]]
    plain: Any = team_b.xread({own: "0"})
    assert [fields["event_id"] for _, fields in plain[0][1]] == ours

    # the other workspace's stream: refused, whatever the command
    assert refused(lambda: team_b.xgroup_create(other, "deployer", id="0"))
    assert refused(lambda: team_b.xreadgroup("deployer", "d1", {other: ">"}))
    assert refused(lambda: team_b.xack(other, "deployer", "0-1"))
    assert refused(lambda: team_b.xread({other: "0"}))
    assert refused(lambda: team_b.xrange(other))
    # every other key: the one shared stream's name, the relay's keys, anything else
    for key in (base, dedupe_key(base), f"{base}:relay-lock", "unrelated"):
        assert refused(partial(team_b.xrange, key)), key
        assert refused(partial(team_b.get, key)), key
    # its own stream, but a command it was not given: it cannot forge, delete or trim events
    assert refused(lambda: team_b.xadd(own, {"event_id": "forged"}))
    assert refused(lambda: team_b.xdel(own, entries[0][0]))
    assert refused(lambda: team_b.xtrim(own, maxlen=0))
    assert refused(lambda: team_b.delete(own))
    assert refused(lambda: team_b.keys("*"))
    assert refused(lambda: team_b.execute_command("ACL", "SETUSER", "team-b", "+@all"))
    assert team_b.xlen(own) == 3

    # the other way round: the workspace `default`'s user reads its stream, never team-b's
    team_default.xgroup_create(other, "deployer", id="0")
    read = team_default.xreadgroup("deployer", "d1", {other: ">"})
    assert [fields["event_id"] for _, fields in read[0][1]] == theirs
    assert refused(lambda: team_default.xreadgroup("deployer", "d1", {own: ">"}))
    assert refused(lambda: team_default.xgroup_create(own, "mine", id="0"))

    # `watcher events tail` itself as the team's consumer: its URL names the ACL user, and it needs no more
    team_b.xgroup_create(own, "ci", id="$")
    more = record_in(watcher, "team-b", 2)
    record_in(watcher, "default", 1)
    assert relay(admin) == 3
    monkeypatch.setenv("WATCHER_REDIS_URL", f"redis://team-b:{users['team-b'][1]}@127.0.0.1:{acl_redis.port}/0")
    get_settings.cache_clear()
    tail = watcher.cli("events", "tail", "--workspace", "team-b", "--group", "ci", "--count", "2", "--json")
    assert tail.exit_code == 0, tail.output
    assert [json.loads(line)["event_id"] for line in tail.stdout.splitlines()] == more
    assert team_b.xpending(own, "ci")["pending"] == 0  # acknowledged
    # and with the other workspace named, the same user is refused in one line
    tail = watcher.cli("events", "tail", "--workspace", "default", "--group", "ci", "--count", "1")
    assert tail.exit_code == 1
    assert "refused a command: this user has no permissions to access one of the keys" in tail.stderr
    assert len(tail.stderr.splitlines()) == 1
    assert users["team-b"][1] not in tail.output
