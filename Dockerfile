# The mediator as it runs in production: gunicorn, non-root, healthcheck on /health.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mediator ./mediator
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app mediator \
    && mkdir -p /app/var && chown mediator /app/var

USER mediator
EXPOSE 8550
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8550/health', timeout=2)" || exit 1

ENTRYPOINT ["openimis-mediator"]
CMD ["serve"]
