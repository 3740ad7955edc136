# One image for both applications: APP_TYPE=EVENT serves the event app, APP_TYPE=BULK_IMPORT the job app,
# unset serves both on one port. Build: docker build -t commercetools-klaviyo-connector .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md requirements-runtime.lock ./
# Runtime dependencies only, every transitive version from the hashed lock (bash .ci/lock regenerates it).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
        -r requirements-runtime.lock
COPY shared shared
COPY event event
COPY job job
COPY connector connector
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 connector \
    && mkdir -p /app/out && chown connector /app/out
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    NODE_ENV=production \
    NODE_CONFIG_DIR=/app/config \
    PYTHONUNBUFFERED=1 \
    PORT=8080
USER connector
EXPOSE 8080
CMD ["python", "-m", "connector"]
