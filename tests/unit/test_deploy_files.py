"""deploy/: the compose file, Dockerfile and Prometheus config refer to things that exist.

Docker cannot run in the test environment, so these checks read the files: every host path
a service uses exists, ports are sane, and Prometheus scrapes the litellm service.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (short or long syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):  # otherwise a named volume
            mounts.append((source, target))
    return mounts


def _published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs from the short syntax ``[IP:]HOST:CONTAINER[/proto]``."""
    pairs = []
    for entry in service.get("ports", []):
        match = re.fullmatch(r"(?:[\d.]+:)?(\d+):(\d+)(?:/(?:tcp|udp))?", str(entry))
        assert match, f"unexpected port entry {entry!r}"
        pairs.append((int(match[1]), int(match[2])))
    return pairs


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _scrape_targets() -> list[str]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    return [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]


class TestCompose:
    def test_has_the_three_services(self) -> None:
        """The compose file defines litellm, redis and prometheus."""
        assert set(_services()) >= {"litellm", "redis", "prometheus"}

    def test_build_context_and_dockerfile_exist(self) -> None:
        """Every build context exists, and so does its Dockerfile."""
        for name, service in _services().items():
            build = service.get("build")
            if build is None:
                continue
            context = DEPLOY / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} missing in {context}"

    def test_dockerfile_copies_existing_sources(self) -> None:
        """Every COPY source in the Dockerfile exists in the build context."""
        build = _services()["litellm"]["build"]
        context = DEPLOY / build["context"]
        copies = re.findall(r"^COPY\s+(?!--from)(.+)$", (context / build["dockerfile"]).read_text(), re.M)
        assert copies
        for line in copies:
            *sources, _destination = line.split()
            for source in sources:
                assert (context / source).exists(), f"COPY source {source} missing in {context}"

    def test_bind_mounted_host_paths_exist(self) -> None:
        """Every host path mounted into a container exists, relative to deploy/."""
        for name, service in _services().items():
            for host, _container in _bind_mounts(service):
                assert (DEPLOY / host).exists(), f"{name}: mounted {host} missing"

    def test_litellm_config_path_is_mounted(self) -> None:
        """The --config the proxy is started with is a file mounted into its container."""
        service = _services()["litellm"]
        config = _option(service["command"], "--config")
        mounted = {container: host for host, container in _bind_mounts(service)}
        assert config in mounted
        assert (DEPLOY / mounted[config]).is_file()

    def test_ports_are_sane(self) -> None:
        """Published ports are valid, distinct on the host, and match what the proxy listens on."""
        host_ports: list[int] = []
        for service in _services().values():
            for host, container in _published_ports(service):
                assert 1 <= host <= 65535 and 1 <= container <= 65535
                host_ports.append(host)
        assert len(host_ports) == len(set(host_ports))
        litellm = _services()["litellm"]
        listen = int(_option(litellm["command"], "--port"))
        assert listen in {container for _host, container in _published_ports(litellm)}

    def test_litellm_environment(self) -> None:
        """The proxy gets Redis by service name, a required master key and the local price map."""
        env = _services()["litellm"]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379"
        assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
        assert env["LITELLM_MASTER_KEY"].startswith("${LITELLM_MASTER_KEY:?")
        assert "OPENAI_API_KEY" in env

    def test_prometheus_config_is_mounted(self) -> None:
        """Prometheus gets deploy/prometheus/prometheus.yml at its default config path."""
        mounts = dict(_bind_mounts(_services()["prometheus"]))
        assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


class TestPrometheus:
    def test_scrapes_the_litellm_service(self) -> None:
        """The scrape target names the litellm service on the port the proxy listens on."""
        listen = _option(_services()["litellm"]["command"], "--port")
        assert f"litellm:{listen}" in _scrape_targets()

    def test_scrape_credentials_are_mounted(self) -> None:
        """A credentials file the scrape uses is a compose secret given to prometheus."""
        config = yaml.safe_load(PROMETHEUS.read_text())
        secrets = set(_services()["prometheus"].get("secrets", []))
        for job in config["scrape_configs"]:
            path = job.get("authorization", {}).get("credentials_file")
            if path is not None:
                assert path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") in secrets
                assert path.removeprefix("/run/secrets/") in _compose()["secrets"]

    def test_promtool_accepts_the_config(self) -> None:
        """promtool check config accepts prometheus.yml (syntax only: secrets exist in the container)."""
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not on PATH (Debian package `prometheus`)")
        result = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(PROMETHEUS)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
