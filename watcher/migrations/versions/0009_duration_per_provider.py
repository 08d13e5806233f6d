"""`watcher_poll_duration_seconds` is kept per provider, no longer per registry: the per-registry bucket,
sum and count rows already counted are folded into their provider's (summed), so the histogram keeps its
history and a scrape reads a dozen rows instead of thirteen a registry

Downgrading keeps the folded rows: the release before reads them as a series with an empty `registry`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import json
from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

METRICS = (
    "watcher_poll_duration_seconds_bucket",
    "watcher_poll_duration_seconds_sum",
    "watcher_poll_duration_seconds_count",
)
counters = sa.table(
    "counters", sa.column("metric", sa.String), sa.column("labels", sa.String), sa.column("value", sa.Float)
)


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(counters.c.metric, counters.c.labels, counters.c.value).where(counters.c.metric.in_(METRICS))
    ).all()
    folded: Counter[tuple[str, str]] = Counter()
    for metric, labels, value in rows:
        kept = {k: v for k, v in json.loads(labels).items() if k != "registry"}
        folded[metric, json.dumps(kept, sort_keys=True, separators=(",", ":"))] += value
    if not rows:
        return
    conn.execute(sa.delete(counters).where(counters.c.metric.in_(METRICS)))
    conn.execute(
        sa.insert(counters),
        [{"metric": metric, "labels": labels, "value": value} for (metric, labels), value in sorted(folded.items())],
    )


def downgrade() -> None:
    pass
