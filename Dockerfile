# One image for every role: `watcher run`, or Celery's own worker and beat for scaling out.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY watcher ./watcher
RUN pip install --no-cache-dir . && useradd --create-home watcher
USER watcher
ENV WATCHER_DATA_DIR=/home/watcher/data
CMD ["watcher", "run"]
