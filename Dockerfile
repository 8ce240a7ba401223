FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    REELBOT_DB=/data/reelbot.db \
    REELBOT_DATA_DIR=/data/media

# DejaVu gives the preview renderer's captions their full character set (—, é, …)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 reelbot && mkdir /data && chown reelbot /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
RUN pip install .

USER reelbot
VOLUME ["/data"]
WORKDIR /data
CMD ["reelbot", "run"]
