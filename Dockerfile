# The mediator as it runs in production: gunicorn, non-root, healthcheck on its configured port.
# The base image is pinned: a rebuild gets the same Python and Debian until this line changes.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEDIATOR_STATE_DIR=/app/var

# Installed from a copy removed afterwards: the package (configuration included) is the only copy.
COPY pyproject.toml README.md /tmp/src/
COPY mediator /tmp/src/mediator
RUN pip install --no-cache-dir "/tmp/src[postgres]" \
    && rm -rf /tmp/src \
    && useradd --system --uid 10001 --home-dir /app mediator \
    && mkdir -p /app/var && chown mediator /app/var && chmod 0700 /app/var

WORKDIR /app
USER mediator
EXPOSE 8550
# The claim store and the instance's state: mount a volume here so that held claims survive.
VOLUME ["/app/var"]
# `health` asks /health on the port and address the settings say (MEDIATOR_PORT, MEDIATOR_HOST).
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["openimis-mediator", "health"]

ENTRYPOINT ["openimis-mediator"]
CMD ["serve"]
