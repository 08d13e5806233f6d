"""`watcher serve` (the HTTP API and console alone) and `watcher run` (the worker, beat and HTTP)."""

from __future__ import annotations

import click

from watcher.cli.common import friendly
from watcher.settings import get_settings


@click.command("serve")
@click.option("--listen", help="HOST:PORT to answer on (default: WATCHER_LISTEN, 127.0.0.1:8080)")
@click.option("--loglevel", default="INFO", show_default=True, help="DEBUG logs every request")
@friendly
def serve(listen: str | None, loglevel: str) -> None:
    """Serve the HTTP API, console and metrics alone (no polling)."""
    from watcher.web.server import parse_listen, serve_forever

    host, port = parse_listen(listen or get_settings().listen)
    serve_forever(host, port, loglevel)


@click.command("run")
@click.option("--concurrency", type=int, help="worker processes (default: number of CPUs)")
@click.option("--loglevel", default="INFO", show_default=True)
@friendly
def run(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker with the beat scheduler embedded, and the HTTP service on WATCHER_LISTEN."""
    import logging

    from watcher import bus, logs
    from watcher.runtime import early_stop
    from watcher.tasks import app
    from watcher.web import server

    settings = get_settings()
    logs.setup(loglevel)  # the lines before Celery's own setup have the same format as every other
    # no mingle: it waits a second at every start to sync revoked tasks with other workers, and none is revoked
    argv = ["worker", "--beat", "--without-mingle", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    # a SIGTERM before Celery installs its own handler still stops what was started (the embedded Redis)
    early_stop.install()
    http = None
    try:
        http = server.start_beside_worker(settings.listen, loglevel)
        if http is not None:
            where = f"console and API at {server.console_url(settings.listen)}"
            embedded = settings.redis_url == bus.EMBEDDED and not settings.database_url
            token_file = server.first_admin_token(settings.data_dir) if embedded else None
            if token_file is not None:
                where += f" (log in with the admin token written to {token_file})"
            logging.getLogger("watcher").info("%s", where)
        early_stop.raise_if_requested()  # a SIGTERM whose exit was lost on the way (`watcher.runtime.early_stop`)
        app.worker_main(argv)
    finally:
        server.stop(http)
        bus.stop_started(only_if_alone=False)
