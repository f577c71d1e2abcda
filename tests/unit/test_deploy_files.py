"""deploy/: the compose file, Dockerfile, Prometheus config, alert rules and Grafana dashboard.

Docker cannot run in the test environment, so these checks read the files: every host path
a service uses exists, ports are sane, Prometheus scrapes the litellm service, promtool accepts
the config and the rules and passes the rules' unit tests, and every PromQL expression of the
dashboard parses and queries only metrics the pack exports. promtool comes from Debian's
``prometheus`` package (``make prometheus-tools``); without it these tests fail under CI and
skip elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "costkit-dashboard.json"

# Every series the pack exports (costkit_litellm/accounting/metrics.py).
COSTKIT_SERIES = {
    "costkit_spend_usd_total",
    "costkit_tokens_total",
    "costkit_requests_total",
    "costkit_saved_usd_total",
    "costkit_cache_requests_total",
    "costkit_request_cost_usd_bucket",
    "costkit_request_cost_usd_sum",
    "costkit_request_cost_usd_count",
    "costkit_budget_remaining_usd",
    "costkit_budget_rejections_total",
    "costkit_budget_alerts_total",
    "costkit_budget_downgrades_total",
    "costkit_circuit_breaks_total",
    "costkit_store_errors_total",
}
PROMQL_FUNCTIONS = {
    # aggregations
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values",
    # functions
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max",
    "clamp_min", "count_over_time", "delta", "deriv", "exp", "floor", "histogram_quantile", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "max_over_time", "min_over_time", "predict_linear", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "sqrt", "sum_over_time", "time", "timestamp", "vector",
}  # fmt: skip
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or"}
_PROMQL_KEYWORDS |= {"unless", "inf", "nan", "atan2"}


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


def _promtool() -> str:
    """promtool's path; missing: a failure under CI (it must be installed), a skip elsewhere."""
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None)
    if found is not None:
        return found
    reason = "promtool missing (Debian package `prometheus`; `make prometheus-tools` installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function names, label names, keywords and
    Grafana variables left out); raises ValueError on an unknown function."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\$\{?\w+\}?", "1", text)  # Grafana variables outside strings ($__range in [...])
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if word.lower() in _PROMQL_KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            if word not in PROMQL_FUNCTIONS:
                raise ValueError(f"unknown PromQL function {word!r} in {expr!r}")
        else:
            names.add(word)
    return names


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title + refId, expr) of every query target in the dashboard."""
    return [
        (f"{panel.get('title')} {target.get('refId')}", target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _as_plain_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus would get it."""
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


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
        result = _run_promtool("check", "config", "--syntax-only", str(PROMETHEUS))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_promtool_accepts_the_config_with_its_rules(self, tmp_path: Path) -> None:
        """A full promtool check config passes on a copy whose credentials file exists: the rule files load."""
        config = yaml.safe_load(PROMETHEUS.read_text())
        assert config["rule_files"] == ["alerts.yml"]
        token = tmp_path / "token"
        token.write_text("sk-test\n")
        for job in config["scrape_configs"]:
            if "credentials_file" in job.get("authorization", {}):
                job["authorization"]["credentials_file"] = str(token)
        config["rule_files"] = [str(PROMETHEUS.parent / name) for name in config["rule_files"]]
        copy = tmp_path / "prometheus.yml"
        copy.write_text(yaml.safe_dump(config))
        result = _run_promtool("check", "config", str(copy))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 8 rules found" in result.stdout + result.stderr

    def test_compose_mounts_the_rule_files_where_the_config_names_them(self) -> None:
        """Each rule file prometheus.yml loads is mounted beside it in the prometheus container."""
        mounts = {container: host for host, container in _bind_mounts(_services()["prometheus"])}
        config_dir = Path(mounts_of_config := "/etc/prometheus/prometheus.yml").parent
        assert mounts_of_config in mounts
        for name in yaml.safe_load(PROMETHEUS.read_text())["rule_files"]:
            host = mounts[str(config_dir / name)]
            assert (DEPLOY / host).resolve() == (PROMETHEUS.parent / name).resolve()


class TestAlertRules:
    def test_promtool_check_rules(self) -> None:
        """promtool check rules accepts alerts.yml."""
        result = _run_promtool("check", "rules", str(ALERTS))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_promtool_rule_unit_tests_pass(self) -> None:
        """promtool test rules passes alerts_test.yml: each alert fires on its input series and not on the others."""
        result = _run_promtool("test", "rules", str(ALERTS_TEST))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_every_alert_has_a_firing_and_a_quiet_test(self) -> None:
        """alerts_test.yml checks every alert at least once firing and once not firing."""
        firing: set[str] = set()
        quiet: set[str] = set()
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
        names = {rule["alert"] for rule in _alert_rules()}
        assert names == firing, names ^ firing
        assert names == quiet, names ^ quiet

    def test_the_wanted_alerts_exist(self) -> None:
        """Budget burn, spend spike, cache collapse, breaker trips, rejection surge and store errors are covered."""
        rules = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
        assert "costkit_budget_remaining_usd" in rules["CostkitBudgetExhaustionSoon"]
        assert "offset 1d" in rules["CostkitSpendSpike"]
        assert "costkit_cache_requests_total" in rules["CostkitCacheHitRateCollapse"]
        assert "costkit_circuit_breaks_total" in rules["CostkitCircuitTripped"]
        assert "costkit_budget_rejections_total" in rules["CostkitBudgetRejectionsSurge"]
        assert "costkit_store_errors_total" in rules["CostkitStoreErrors"]

    def test_rules_query_only_exported_metrics_and_say_why(self) -> None:
        """Every rule selects only costkit_* series the pack exports and has a severity and a summary."""
        for rule in _alert_rules():
            names = metric_names(rule["expr"])
            assert names and names <= COSTKIT_SERIES, (rule["alert"], names - COSTKIT_SERIES)
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"]


class TestDashboard:
    def test_parses_with_a_prometheus_datasource_variable(self) -> None:
        """The dashboard JSON parses, is schema 39, and every panel queries through a Prometheus datasource variable."""
        dashboard = _dashboard()
        assert 36 <= dashboard["schemaVersion"] <= 41
        assert dashboard["uid"] and dashboard["title"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in _panels(dashboard["panels"]):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_layout(self) -> None:
        """Panel ids are unique and every panel fits the 24-column grid."""
        panels = list(_panels(_dashboard()["panels"]))
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids))
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]

    def test_queries_only_exported_metrics(self) -> None:
        """Every expr and variable query in the dashboard selects only costkit_* series the pack exports."""
        exprs = _dashboard_exprs()
        assert len(exprs) >= 20
        for where, expr in exprs:
            assert _balanced(expr), where
            names = metric_names(expr)
            assert names and names <= COSTKIT_SERIES, (where, names - COSTKIT_SERIES)
        for variable in _dashboard()["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
                assert match and match[1] in COSTKIT_SERIES, variable["definition"]

    def test_covers_the_finops_questions(self) -> None:
        """Spend by feature, team and model (rate and increase), savings by source, cache hit rate,
        budget remaining, rejections, circuit trips, cost quantiles and tokens each have a query."""
        exprs = [expr for _, expr in _dashboard_exprs()]

        def some(*parts: str) -> bool:
            return any(all(part in expr for part in parts) for expr in exprs)

        for label in ("feature", "team", "model"):
            assert some(f"sum by ({label}) (rate(costkit_spend_usd_total"), label
            assert some(f"sum by ({label}) (increase(costkit_spend_usd_total"), label
        assert some("sum by (source)", "costkit_saved_usd_total")
        assert some('costkit_cache_requests_total{result="hit"}', 'result=~"hit|miss"')
        assert some("costkit_budget_remaining_usd")
        assert some("sum by (budget, reason)", "costkit_budget_rejections_total")
        assert some("costkit_circuit_breaks_total")
        assert some("histogram_quantile(0.95", "costkit_request_cost_usd_bucket", "le")
        assert some("costkit_tokens_total", "direction")

    def test_every_expression_parses(self, tmp_path: Path) -> None:
        """Every dashboard expression (Grafana variables filled in) is valid PromQL: promtool loads them as rules."""
        rules = [
            {"record": f"costkit_dashboard:expr_{i}", "expr": _as_plain_promql(expr)}
            for i, (_, expr) in enumerate(_dashboard_exprs())
        ]
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = _run_promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr

    def test_metric_name_check_catches_mistakes(self) -> None:
        """The name check itself rejects a misspelt metric and an unknown function and ignores labels and variables."""
        assert metric_names('sum by (feature) (rate(costkit_spend_usd_total{model=~"$model"}[$__rate_interval]))') == {
            "costkit_spend_usd_total"
        }
        assert metric_names("rate(costkit_spend_usd[5m]) offset 1d * 1e-9") == {"costkit_spend_usd"}
        with pytest.raises(ValueError, match="ratee"):
            metric_names("ratee(costkit_spend_usd_total[5m])")
        assert not _balanced("sum(rate(x[5m])")


class TestGrafana:
    def test_compose_runs_grafana_11_with_provisioning_and_dashboard(self) -> None:
        """The grafana service runs Grafana 11 with the provisioning folders and the dashboard mounted."""
        service = _services()["grafana"]
        assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", service["image"])
        mounts = dict(_bind_mounts(service))
        assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
        assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
        assert mounts["./grafana/costkit-dashboard.json"].endswith(".json")
        for host, _container in _bind_mounts(service):
            assert (DEPLOY / host).exists(), host

    def test_datasource_points_at_the_prometheus_service(self) -> None:
        """The provisioned datasource is a Prometheus at the compose service's port."""
        sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
        (source,) = sources["datasources"]
        assert source["type"] == "prometheus"
        port = _published_ports(_services()["prometheus"])[0][1]
        assert source["url"] == f"http://prometheus:{port}"

    def test_dashboard_provider_reads_the_mounted_dashboard(self) -> None:
        """The dashboard provider's folder is where compose mounts costkit-dashboard.json."""
        providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "costkit.yml").read_text())
        (provider,) = providers["providers"]
        assert provider["type"] == "file"
        mounted = dict(_bind_mounts(_services()["grafana"]))["./grafana/costkit-dashboard.json"]
        assert str(Path(mounted).parent) == provider["options"]["path"]


# --- Kubernetes ---------------------------------------------------------------------------------

KUBE = DEPLOY / "kubernetes"
KUBE_VERSION = "1.30"
CRDS = {"monitoring.coreos.com/v1": {"ServiceMonitor"}}
"""Custom resources the schemas do not ship: checked by hand below."""


def _kube_documents(directory: Path = KUBE) -> list[tuple[Path, dict[str, Any]]]:
    """(file, document) of every manifest in a folder (kustomization files and overlays' patches left out)."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path, document))
    return found


def _kind(kind: str) -> dict[str, Any]:
    (document,) = [d for _, d in _kube_documents() if d["kind"] == kind]
    return document


def _named(kind: str, name: str) -> dict[str, Any]:
    (document,) = [d for _, d in _kube_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


def _proxy_container() -> dict[str, Any]:
    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _proxy_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(_kind("ConfigMap")["data"]["proxy_config.yaml"])
    return data


class TestKubernetes:
    def test_every_manifest_validates(self) -> None:
        """Every manifest (base and overlays) passes kubernetes-validate's strict schemas for Kubernetes 1.30."""
        import kubernetes_validate

        documents = [*_kube_documents(), *_kube_documents(KUBE / "servicemonitor")]
        documents += [(p, d) for p, d in _kube_documents(KUBE / "shared-spool") if p.name != "spool-volume.yaml"]
        kinds = {d["kind"] for _, d in documents}
        assert kinds >= {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"}
        assert kinds >= {"HorizontalPodAutoscaler", "StatefulSet", "ServiceMonitor", "PersistentVolumeClaim"}
        for path, document in documents:
            if document["kind"] in CRDS.get(document["apiVersion"], set()):
                continue
            try:
                kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {document['kind']}: {exc.message}")

    def test_validation_catches_a_mistake(self) -> None:
        """The validation step rejects a misspelt field (so the test above can fail)."""
        import kubernetes_validate

        broken = json.loads(json.dumps(_kind("Deployment")))
        broken["spec"]["replica"] = 3
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)

    def test_kustomizations_list_exactly_the_files(self) -> None:
        """The base kustomization lists every manifest of its folder; overlays name files that exist."""
        base = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
        assert sorted(base["resources"]) == sorted(
            p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml"
        )
        for overlay in ("servicemonitor", "shared-spool"):
            kustomization = yaml.safe_load((KUBE / overlay / "kustomization.yaml").read_text())
            assert ".." in kustomization["resources"]
            names = [r for r in kustomization["resources"] if r != ".."]
            names += [patch["path"] for patch in kustomization.get("patches", [])]
            for name in names:
                assert (KUBE / overlay / name).is_file(), (overlay, name)

    def test_proxy_deployment(self) -> None:
        """Several replicas of the image from deploy/Dockerfile, rolling without losing capacity, the config
        from the ConfigMap at the path --config names."""
        deployment = _kind("Deployment")
        assert deployment["spec"]["replicas"] >= 2
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        container = _proxy_container()
        images = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["images"]
        assert container["image"] in {image["name"] for image in images}
        assert container["image"] == _services()["litellm"]["image"].split(":")[0]  # the Dockerfile's build
        config = _option(container["args"], "--config")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (name,) = [n for n, v in volumes.items() if "configMap" in v]
        assert volumes[name]["configMap"]["name"] == _kind("ConfigMap")["metadata"]["name"]
        assert config == f"{mounts[name]}/proxy_config.yaml"
        assert int(_option(container["args"], "--port")) == container["ports"][0]["containerPort"]

    def test_secrets_come_from_the_secret(self) -> None:
        """The master key, provider key, Redis URLs and drain token come from the Secret, which has each key."""
        secret = _kind("Secret")
        env = {e["name"]: e for e in _proxy_container()["env"]}
        for name in ("LITELLM_MASTER_KEY", "OPENAI_API_KEY", "REDIS_URL", "CACHE_REDIS_URL", "DRAIN_ENDPOINT_TOKEN"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
        redis_host = secret["stringData"]["REDIS_URL"].split("//")[1].split(":")[0]
        assert redis_host == _named("Service", "costkit-redis")["metadata"]["name"]

    def test_configmap_config_passes_check_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The ConfigMap's proxy_config.yaml passes `costkit check-config` with the Secret's variables set."""
        from costkit_litellm.cli import main

        for name, value in _kind("Secret")["stringData"].items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "proxy_config.yaml"
        path.write_text(_kind("ConfigMap")["data"]["proxy_config.yaml"])
        assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
        assert "Redis redis://costkit-redis:6379" in capsys.readouterr().out

    def test_readiness_fails_while_the_store_is_unreachable_under_fail_closed(self) -> None:
        """Readiness probes the pack's route (503 while Redis is down under fail_closed, and while draining)."""
        from costkit_litellm.litellm_adapter.lifecycle import READINESS_PATH

        probe = _proxy_container()["readinessProbe"]["httpGet"]
        assert probe["path"] == READINESS_PATH and probe["port"] == "http"
        assert _proxy_config()["costkit"]["budget_settings"]["on_store_error"] == "fail_closed"

    def test_prestop_drains_within_the_grace_period(self) -> None:
        """preStop calls LiteLLM's /health/drain (enabled in the config) and the grace period covers the
        drain, uvicorn's wait and costkit's flush."""
        container = _proxy_container()
        script = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert "/health/drain" in script and "X-Drain-Token" in script
        assert _proxy_config()["general_settings"]["enable_drain_endpoint"] is True
        env = {e["name"]: e.get("value") for e in container["env"]}
        sleep = float(re.search(r"time\.sleep\((\d+)\)", script)[1])  # type: ignore[index]
        drain = float(env["GRACEFUL_SHUTDOWN_TIMEOUT"])
        flush = float(_proxy_config()["costkit"]["shutdown"]["flush_timeout_s"])
        grace = _kind("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > sleep + 2 * drain + flush

    def test_spool_dir_is_a_volume(self) -> None:
        """costkit.shutdown.spool_dir is a mounted volume; the shared-spool overlay makes it a ReadWriteMany claim."""
        spool = _proxy_config()["costkit"]["shutdown"]["spool_dir"]
        mounts = {m["mountPath"]: m["name"] for m in _proxy_container()["volumeMounts"]}
        assert spool in mounts
        patch = yaml.safe_load((KUBE / "shared-spool" / "spool-volume.yaml").read_text())
        (volume,) = patch["spec"]["template"]["spec"]["volumes"]
        assert volume["name"] == mounts[spool]
        pvc = yaml.safe_load((KUBE / "shared-spool" / "spool-pvc.yaml").read_text())
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    def test_selectors_match_the_pods(self) -> None:
        """The Service, PodDisruptionBudget and ServiceMonitor select the proxy pods; the HPA scales the
        Deployment on CPU."""
        deployment = _kind("Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = _named("Service", "costkit-proxy")
        assert service["spec"]["selector"].items() <= labels.items()
        assert _kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
        hpa = _kind("HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "costkit-proxy"}
        assert hpa["minReplicas"] >= 2 and hpa["metrics"][0]["resource"]["name"] == "cpu"
        assert _proxy_container()["resources"]["requests"]["cpu"]  # utilisation needs a request
        (monitor,) = [d for _, d in _kube_documents(KUBE / "servicemonitor") if d["kind"] == "ServiceMonitor"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports

    def test_scrape_annotations_name_the_metrics_port(self) -> None:
        """The Prometheus annotations scrape costkit.metrics.port (no master key needed), a declared container port."""
        annotations = _kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        port = int(annotations["prometheus.io/port"])
        assert port == _proxy_config()["costkit"]["metrics"]["port"]
        assert port in {p["containerPort"] for p in _proxy_container()["ports"]}

    def test_redis_persists_with_aof(self) -> None:
        """The bundled Redis has the search module image, AOF on, and a persistent volume for /data."""
        redis = _kind("StatefulSet")
        (container,) = redis["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith("redis/redis-stack-server:")
        args = {e["name"]: e["value"] for e in container["env"]}["REDIS_ARGS"]
        assert "--appendonly yes" in args
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data"}
        assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == container["volumeMounts"][0]["name"]
