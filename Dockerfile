# One image for the Sync API stand-in and the Dagster webserver/daemon/code.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TZ=UTC DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/rossmann_local
COPY pyproject.toml README.md ./
COPY rossmann_local ./rossmann_local
RUN pip install --no-cache-dir . && mkdir -p $DAGSTER_HOME
COPY dagster.yaml workspace.yaml $DAGSTER_HOME/
COPY workspace.yaml ./
