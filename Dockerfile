# syntax=docker/dockerfile:1.7
# One image for every Python service of the stack: the Airflow components, the
# MLflow tracking server and the prediction service. They share the locked
# dependency set, so a model trained by a worker loads in the prediction
# service with exactly the same library versions.
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3
WORKDIR /opt/mlops
# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra production --no-install-project
COPY include/ include/
# Editable, as in development: settings.py finds the project root (configs/,
# great_expectations/) from the package's own location.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra production

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# The commit the image is built from, and whether its tree had uncommitted changes:
# .dockerignore keeps .git out of the image, so training runs inside it record these
# (mlops.training.runs.git_commit / git_dirty) instead of asking git. Pass them at build:
#   docker compose build --build-arg GIT_COMMIT=$(git rev-parse HEAD) \
#     --build-arg GIT_DIRTY=$(test -z "$(git status --porcelain)" && echo false || echo true)
ARG GIT_COMMIT=unknown
ARG GIT_DIRTY=unknown
LABEL org.opencontainers.image.revision=$GIT_COMMIT \
      org.opencontainers.image.source="mlops-loop"
# uid 50000 is the Airflow images' convention, so volumes move between them.
RUN groupadd --gid 50000 mlops \
    && useradd --uid 50000 --gid mlops --create-home --home-dir /home/mlops mlops \
    && mkdir -p /var/lib/mlops /var/lib/mlflow/artifacts /opt/airflow/logs \
    && chown -R mlops:mlops /var/lib/mlops /var/lib/mlflow /opt/airflow
WORKDIR /opt/mlops
COPY --from=builder /opt/mlops/.venv /opt/mlops/.venv
# The project tree; .dockerignore is an allowlist, so a folder that does not
# exist yet (an empty plugins/) does not break the build.
COPY . .
# Great Expectations writes validation results and data docs under uncommitted/
# (a named volume in docker-compose.yaml, initialised from this folder).
RUN mkdir -p great_expectations/uncommitted \
    && chown -R mlops:mlops great_expectations
ENV PATH=/opt/mlops/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLOPS_GIT_COMMIT=$GIT_COMMIT \
    MLOPS_GIT_DIRTY=$GIT_DIRTY \
    MLOPS_PROJECT_ROOT=/opt/mlops \
    MLOPS_HOME=/var/lib/mlops \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/mlops/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/mlops/plugins
USER mlops
EXPOSE 8080 5000 8000
CMD ["python", "-m", "mlops.serving", "--host", "0.0.0.0", "--port", "8000"]
