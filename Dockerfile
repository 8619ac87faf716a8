# walletd with Redis 7 from Debian (fsync-before-reply with appendfsync always).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
# A regular install: the Lua scripts ship inside the package (app/lua), so the sources
# are not needed once it is built (.ci/wheel_check.py runs the same from a wheel).
COPY pyproject.toml README.md /tmp/walletd/
COPY app /tmp/walletd/app
COPY lua /tmp/walletd/lua
RUN python3 -m pip install --no-cache-dir /tmp/walletd && rm -rf /tmp/walletd
WORKDIR /srv/walletd
# Listen on all interfaces inside the container; set stargame.allowed_ips to
# the game platform's addresses in your own config before taking traffic.
RUN printf 'data_dir = "/var/lib/walletd"\n[server]\nhost = "0.0.0.0"\nport = 8080\n' > /etc/walletd.toml
ENV WALLETD_CONFIG=/etc/walletd.toml
VOLUME /var/lib/walletd
EXPOSE 8080
CMD ["walletd", "serve"]
