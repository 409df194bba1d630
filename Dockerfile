# One image for every b24-nps service; the command picks the service (`nps run <service>`).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json

RUN groupadd --system nps && useradd --system --gid nps --home-dir /app --shell /usr/sbin/nologin nps
WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services examples \
    && touch shared/__init__.py services/__init__.py examples/__init__.py \
    && pip install . \
    && pip uninstall -y b24-nps \
    && rm -rf shared services examples

COPY shared ./shared
COPY services ./services
COPY examples ./examples
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-deps . && chown -R nps:nps /app

USER nps
EXPOSE 8000
ENTRYPOINT ["nps"]
CMD ["run", "ingest"]
