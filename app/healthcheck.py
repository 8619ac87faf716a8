"""`walletd healthcheck`: GET /healthz of the walletd serve this configuration describes,
for a container's HEALTHCHECK (the image has no curl): exit 0 when it answers 200, else 1.

It reads the same configuration as serve (--config, $WALLETD_CONFIG, $WALLETD_PORT), so it
follows server.port and server.ssl_certfile: with TLS on it speaks HTTPS. Exit 1 for every
failure, a configuration it cannot read included: Docker reserves exit code 2.
"""

from __future__ import annotations

import http.client
import ssl
import sys

from app import settings as config
from app.settings import ServerSettings

HEALTHY, UNHEALTHY = 0, 1
HTTP_OK = 200
# Under Docker's --timeout (the image's: 5 s), so a hung server reports itself.
TIMEOUT_S = 4.0
# A listener on every address is probed on the loopback address of its family.
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - names the wildcard, binds nothing


def connection(server: ServerSettings) -> http.client.HTTPConnection:
    host = LOOPBACK.get(server.host, server.host)
    if not server.ssl_certfile:
        return http.client.HTTPConnection(host, server.port, timeout=TIMEOUT_S)
    # The probe comes from inside the host or container, and the certificate names the
    # public host name, not 127.0.0.1: it is not verified. Nothing secret is sent or read.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(host, server.port, timeout=TIMEOUT_S, context=context)


def probe(server: ServerSettings) -> tuple[bool, str]:
    """(healthy, one line saying what /healthz answered or why it could not be asked)."""
    conn = connection(server)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read(1024).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{conn.host}:{conn.port}: {str(exc) or type(exc).__name__}"
    finally:
        conn.close()
    return response.status == HTTP_OK, f"{response.status} {body}"


def main(config_path: str | None) -> int:
    try:
        settings = config.load(config_path)
    except config.ConfigError as exc:
        print(f"walletd healthcheck: {exc}", file=sys.stderr)
        return UNHEALTHY
    healthy, answer = probe(settings.server)
    print(f"walletd healthcheck: {answer}", file=sys.stdout if healthy else sys.stderr)
    return HEALTHY if healthy else UNHEALTHY
