# One image for every service of ours in docker-compose.yml: the one-shot set-up commands, the Sync
# API stand-in, and the Dagster code server, webserver and daemon.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TZ=UTC DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY rossmann_local ./rossmann_local
RUN pip install --no-cache-dir . && mkdir -p $DAGSTER_HOME/storage /var/lib/rossmann
# The instance (Postgres storage, run queue) and the workspace that points at the code server.
COPY dagster.yaml $DAGSTER_HOME/dagster.yaml
COPY deploy/workspace.yaml ./workspace.yaml
