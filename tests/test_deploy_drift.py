"""The deployment files agree with the code.

Checked without a Docker engine or a cluster, by parsing the files:

* ``deploy/``: the Strimzi KafkaTopics are exactly the topics the code declares
  (``topic_specs`` + ``worker_state_specs`` + the Faust leader topic the worker creates) for
  the settings in the ConfigMap: names, partitions, replication factor and configs, plus
  the production configs (min.insync.replicas=2, unclean leader election off), with
  replication factor 3.  The Deployment reads that ConfigMap, mounts the archive at
  FLEETLEDGER_ARCHIVE_DIR and the signing-key Secret, and has probes and resources.
  The workers connect with TLS + SCRAM: to the port of the example cluster's listener
  with that TLS and authentication (``deploy/cluster/kafka.yaml``), as the KafkaUser their
  settings name, whose ACLs cover every topic and the group, with the cluster CA and the
  user's password mounted from the Secrets Strimzi makes, at the paths the settings name.
  When ``kubectl`` is installed, the base and every overlay are also rendered with
  ``kubectl kustomize`` and checked the same way.
* ``docker-compose.yml`` and ``docker-compose.secure.yml`` (TLS + SCRAM): a KRaft
  ``apache/kafka`` broker whose listener is the one FLEETLEDGER_BROKER names, with the
  security protocol (and SASL mechanism) the settings use; worker settings that give a
  topic layout valid on one broker; the worker is the only thing creating topics; the CA
  and password files the settings name are mounted, the broker's certificate names its
  host, and the SCRAM user the broker gets is the one the settings name.
* Every ``FLEETLEDGER_*`` variable named in those files, the Dockerfile and the operations
  guide is a field of :class:`~fleetledger.config.Settings`.
* The Dockerfile installs with ``make install``, the recipe behind the README's commands,
  and nothing else; ``.dockerignore`` keeps what that install needs.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetledger.kernel import kafka
from fleetledger.kernel.config import SECRET_FIELDS, Settings, load_settings, parse_broker_url
from fleetledger.processors.runtimes.faust_app import build_app
from fleetledger.processors.runtimes.kafka_io import topic_specs, worker_state_specs

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SECURE = ROOT / "docker-compose.secure.yml"
COMPOSE_FILES = (COMPOSE, COMPOSE_SECURE)
CLUSTER = DEPLOY / "cluster" / "kafka.yaml"
DOCKERFILE = ROOT / "Dockerfile"
#: The folders that each build one distribution (``make install`` installs them all).
DISTRIBUTIONS = ("schemas", "producers", "processors")
OPERATIONS = ROOT / "docs" / "operations.md"

PREFIX = "FLEETLEDGER_"
ENV_NAME = re.compile(r"\bFLEETLEDGER_[A-Z0-9_]+")

#: Topic configs every production topic carries on top of what the code declares.
PRODUCTION_TOPIC_CONFIGS = {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
PRODUCTION_REPLICATION_FACTOR = 3
#: The roles whose topics hold the latest value per key (compacted); the rest keep data.
COMPACTED_ROLES = {"totals", "intercepts", "bundles"}


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the files under test only, never from this process's environment."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------------- helpers


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


#: Settings naming a file that holds a secret (read when settings are loaded).
SECRET_FILE_FIELDS = {f"{name}_file" for name in SECRET_FIELDS}


def settings_from_env(env: Mapping[str, object], where: str) -> Settings:
    """The Settings a process started with ``env`` gets (only FLEETLEDGER_* are read).

    Secret files exist only where the process runs: a placeholder secret stands in for each
    (``secret_files`` gives the paths the files name), after checking the path is absolute.
    The security settings must agree with each other.
    """
    fields = set(Settings.model_fields)
    overrides: dict[str, object] = {}
    for name, value in env.items():
        if not name.startswith(PREFIX):
            continue
        field = name[len(PREFIX) :].lower()
        assert field in fields, f"{where}: {name} is not a setting of fleetledger.config.Settings"
        overrides[field] = value if isinstance(value, str) else str(value).lower()
    for field in SECRET_FILE_FIELDS & set(overrides):
        path = Path(str(overrides[field]))
        assert path.is_absolute(), f"{where}: {PREFIX}{field.upper()} is not an absolute path"
        del overrides[field]
        overrides[field.removesuffix("_file")] = "placeholder-secret"
    settings = load_settings(**overrides)
    kafka.check_security(settings)
    return settings


def secret_files(env: Mapping[str, object]) -> dict[str, Path]:
    """``{field: path}`` of the settings in ``env`` that name a file read at start."""
    out: dict[str, Path] = {}
    for field in (
        *SECRET_FILE_FIELDS,
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
    ):
        value = env.get(f"{PREFIX}{field.upper()}")
        if value:
            out[field] = Path(str(value))
    return out


@dataclass(frozen=True)
class Expected:
    partitions: int
    replicas: int
    configs: dict[str, str]
    role: str


def leader_topic(settings: Settings) -> tuple[str, int]:
    """Name and partitions of the leader topic Faust creates for the worker's group."""
    # (A plaintext connection: the CA file named in the settings exists only in the pod.)
    connection = kafka.KafkaConnection.plaintext(settings.broker_url().bootstrap)
    app = build_app(settings, connection=connection)
    topic = app._leader_assignor._leader_topic  # type: ignore[attr-defined]
    return topic.get_topic_name(), int(topic.partitions)


def expected_topics(settings: Settings, extra: Mapping[str, str]) -> dict[str, Expected]:
    """Every topic the worker uses under ``settings``, with ``extra`` configs on top."""
    out: dict[str, Expected] = {}
    for spec in (*topic_specs(settings).all(), *worker_state_specs(settings)):
        for key, value in extra.items():
            if key in spec.configs:
                assert spec.configs[key] == value, (
                    f"{spec.name}: the code declares {key}={spec.configs[key]}, the "
                    f"production configs {key}={value}"
                )
        out[spec.name] = Expected(
            spec.partitions, spec.replication_factor, {**spec.configs, **extra}, spec.role
        )
    name, partitions = leader_topic(settings)
    out[name] = Expected(partitions, settings.replication_factor, dict(extra), "leader")
    return out


def config_str(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: {raw!r} is not NAME=value"
        out[name.strip()] = value
    return out


def kustomize_parse(directory: Path) -> list[dict[str, Any]]:
    """The resources and generated ConfigMaps of a kustomization without resource-level
    transformations (enough for the base, which has none)."""
    k = load_yaml_docs(directory / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = []
    for resource in k.get("resources", []):
        path = directory / resource
        assert path.is_file(), f"{directory}: resource {resource} is not a file"
        docs += load_yaml_docs(path)
    for gen in k.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in gen.get("envs", []):
            data.update(read_env_file(directory / env_file))
        for literal in gen.get("literals", []):
            name, _, value = literal.partition("=")
            data[name] = value
        docs.append({"kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return docs


def kustomize_render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the unrendered files are checked elsewhere")
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory}: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def the_one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"found {len(found)} {kind} named {name!r}, expected one"
    return found[0]


def worker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    workers = [c for c in containers if "worker" in (c.get("args") or c.get("command") or [])]
    assert len(workers) == 1, "the worker Deployment should run one `fleetledger worker`"
    worker: dict[str, Any] = workers[0]
    return worker


def deployment_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, "the worker's settings come from ConfigMaps"
        env.update(the_one(docs, "ConfigMap", ref["name"]).get("data", {}))
    for item in container.get("env", []):
        assert "value" in item, f"env {item['name']} should be a plain value (or in the ConfigMap)"
        env[item["name"]] = item["value"]
    return env


def check_manifests(docs: list[dict[str, Any]], where: str) -> None:
    """Everything the manifests of one kustomization must agree on with the code."""
    deployment = the_one(docs, "Deployment", "fleetledger-worker")
    container = worker_container(deployment)
    env = deployment_env(docs, container)
    settings = settings_from_env(env, where)

    # Production defaults.
    assert settings.replication_factor == PRODUCTION_REPLICATION_FACTOR, where
    assert settings.enable_idempotence is True, where
    url = settings.broker_url()
    assert url.kind == "kafka", f"{where}: FLEETLEDGER_BROKER should be kafka://..."

    # Topics: exactly the declared ones, each with the declared layout and configs.
    expected = expected_topics(settings, PRODUCTION_TOPIC_CONFIGS)
    topics = of_kind(docs, "KafkaTopic")
    by_name = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in topics}
    assert len(by_name) == len(topics), f"{where}: two KafkaTopics name the same topic"
    assert set(by_name) == set(expected), (
        f"{where}: KafkaTopics {sorted(by_name)}, expected {sorted(expected)}"
    )
    clusters = set()
    for name, want in expected.items():
        spec = by_name[name]["spec"]
        assert spec["partitions"] == want.partitions, f"{where}: {name} partitions"
        assert spec["replicas"] == want.replicas == PRODUCTION_REPLICATION_FACTOR, (
            f"{where}: {name} replicas"
        )
        found = {k: config_str(v) for k, v in (spec.get("config") or {}).items()}
        assert found == want.configs, f"{where}: {name} configs {found}, expected {want.configs}"
        policy = found.get("cleanup.policy", "delete")
        if want.role in COMPACTED_ROLES:
            assert policy == "compact", f"{where}: {name} should be compacted"
        elif want.role == "events":
            assert "compact" not in policy, f"{where}: the raw event topic must keep its data"
        clusters.add(by_name[name]["metadata"].get("labels", {}).get("strimzi.io/cluster"))

    # The topics belong to the cluster whose bootstrap service the workers connect to.
    assert len(clusters) == 1 and None not in clusters, f"{where}: strimzi.io/cluster labels"
    (cluster,) = clusters
    for server in url.bootstrap_servers:
        host = server.rpartition(":")[0]
        assert host.split(".")[0] == f"{cluster}-kafka-bootstrap", (
            f"{where}: FLEETLEDGER_BROKER host {host!r} is not cluster {cluster!r}'s bootstrap"
        )

    # Workers: no more than partitions (more would idle), probes, resources.
    replicas = deployment["spec"].get("replicas", 1)
    assert 1 <= replicas <= settings.partitions, f"{where}: {replicas} worker replicas"
    for probe in ("livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"], f"{where}: {probe} is a python -c exec probe"
        check_imports(command[2], f"{where}:{probe}")
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"

    # Volumes: the archive at FLEETLEDGER_ARCHIVE_DIR, the signing key from its Secret.
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert settings.archive_dir.is_absolute(), f"{where}: FLEETLEDGER_ARCHIVE_DIR is relative"
    archive = volumes[mounts[str(settings.archive_dir)]]
    claim = archive["persistentVolumeClaim"]["claimName"]
    pvc = the_one(docs, "PersistentVolumeClaim", claim)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], f"{where}: workers share the archive"
    secrets = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
    assert secrets, f"{where}: the signing key Secret is not mounted"
    made_by_strimzi = {f"{cluster}-cluster-ca-cert"} | {
        u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")
    }
    for secret in secrets:
        if secret not in made_by_strimzi:
            the_one(docs, "Secret", secret)

    check_kafka_security(docs, settings, env, cluster, container, volumes, where)

    # Non-root, as the image.
    assert pod["securityContext"]["runAsNonRoot"] is True, where
    assert pod["securityContext"]["runAsUser"] == dockerfile_user_id(), where


def check_imports(source: str, where: str) -> None:
    """The modules and names a probe imports exist (a renamed module breaks a probe)."""
    tree = ast.parse(source, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None, where
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"


def mounted_file(
    path: Path, container: dict[str, Any], volumes: dict[str, Any], where: str
) -> tuple[dict[str, Any], str]:
    """The volume holding ``path`` in ``container``, and the file's name in it."""
    for mount in container["volumeMounts"]:
        if path.parent == Path(mount["mountPath"]):
            assert mount.get("readOnly") is True, f"{where}: {mount['mountPath']} read-only"
            return volumes[mount["name"]], path.name
    pytest.fail(f"{where}: no volume is mounted at {path.parent} (for {path})")


def acl_covers(acls: list[dict[str, Any]], kind: str, name: str, operations: set[str]) -> bool:
    for acl in acls:
        resource = acl["resource"]
        if resource["type"] != kind:
            continue
        pattern = resource.get("patternType", "literal")
        matches = (
            name.startswith(resource["name"]) if pattern == "prefix" else (name == resource["name"])
        )
        if matches and operations <= set(acl.get("operations", [])):
            return True
    return False


def check_kafka_security(
    docs: list[dict[str, Any]],
    settings: Settings,
    env: Mapping[str, str],
    cluster: str,
    container: dict[str, Any],
    volumes: dict[str, Any],
    where: str,
) -> None:
    """TLS + SCRAM through the Strimzi listener, user, Secrets and ACLs the code needs."""
    assert settings.kafka_security_protocol == "SASL_SSL", f"{where}: production uses TLS + SASL"
    mechanism = settings.kafka_sasl_mechanism
    assert mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"), f"{where}: {mechanism}"
    assert settings.kafka_ssl_check_hostname, f"{where}: host names are checked in production"

    # The listener on the broker URL's port: TLS, with the mechanism as its authentication.
    port = int(settings.broker_url().bootstrap_servers[0].rpartition(":")[2])
    (kafka_cr,) = [d for d in load_yaml_docs(CLUSTER) if d["kind"] == "Kafka"]
    assert kafka_cr["metadata"]["name"] == cluster, f"{CLUSTER}: the cluster is {cluster!r}"
    listeners = [x for x in kafka_cr["spec"]["kafka"]["listeners"] if x["port"] == port]
    assert len(listeners) == 1, f"{where}: no listener on port {port} in {CLUSTER.name}"
    (listener,) = listeners
    assert listener["tls"] is True, f"{where}: the listener on {port} has no TLS"
    assert listener["authentication"]["type"] == mechanism.lower(), where
    assert kafka_cr["spec"]["kafka"]["authorization"]["type"] == "simple", where
    assert "userOperator" in kafka_cr["spec"]["entityOperator"], "KafkaUsers need it"

    # The user the workers connect as, and its ACLs: every topic, the group.
    user = the_one(docs, "KafkaUser", str(settings.kafka_sasl_username))
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster, where
    assert user["spec"]["authentication"]["type"] == mechanism.lower(), where
    acls = user["spec"]["authorization"]["acls"]
    for name in expected_topics(settings, {}):
        assert acl_covers(acls, "topic", name, {"Read", "Write", "Describe", "Create"}), (
            f"{where}: the ACLs of {settings.kafka_sasl_username} do not cover topic {name}"
        )
    assert acl_covers(acls, "group", settings.group_id, {"Read", "Describe"}), where
    agents = [
        u
        for u in of_kind(docs, "KafkaUser")
        if u["metadata"]["name"] != settings.kafka_sasl_username
    ]
    assert any(
        acl_covers(
            u["spec"]["authorization"]["acls"],
            "topic",
            topic_specs(settings).events.name,
            {"Write", "Describe"},
        )
        for u in agents
    ), f"{where}: no KafkaUser for the agents (the SDK) can write the events topic"

    # The CA and the password: files from the Secrets Strimzi makes, at the paths named.
    files = secret_files(env)
    assert set(files) == {"kafka_ssl_cafile", "kafka_sasl_password_file"}, f"{where}: {files}"
    for field, secret, key in (
        ("kafka_ssl_cafile", f"{cluster}-cluster-ca-cert", "ca.crt"),
        ("kafka_sasl_password_file", str(settings.kafka_sasl_username), "password"),
    ):
        volume, name = mounted_file(files[field], container, volumes, where)
        assert volume["secret"]["secretName"] == secret, f"{where}: {field} from {secret}"
        items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
        assert items.get(name, name) == key, f"{where}: {files[field]} is key {key} of {secret}"


# --------------------------------------------------------------------------- deploy/


def test_base_manifests_match_the_declared_topics_and_settings() -> None:
    check_manifests(kustomize_parse(BASE), "deploy/base")


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(DEPLOY)))
def test_rendered_kustomizations_match_the_code(directory: Path) -> None:
    check_manifests(kustomize_render(directory), str(directory.relative_to(ROOT)))


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_overlays_leave_topics_and_topic_settings_to_the_base(directory: Path) -> None:
    """Topic settings and KafkaTopics live together in the base, so they change together."""
    k = load_yaml_docs(directory / "kustomization.yaml")[0]
    assert "../../base" in k.get("resources", []), f"{directory} builds on the base"
    topic_settings = {"PARTITIONS", "REPLICATION_FACTOR", "TOPIC_PREFIX", "GROUP_ID"}
    for gen in k.get("configMapGenerator", []):
        names = {literal.partition("=")[0] for literal in gen.get("literals", [])}
        for env_file in gen.get("envs", []):
            names |= set(read_env_file(directory / env_file))
        assert not {f"{PREFIX}{s}" for s in topic_settings} & names, directory
    for patch in k.get("patches", []) + k.get("patchesJson6902", []):
        target = patch.get("target", {})
        assert target.get("kind") in ("Deployment", "PersistentVolumeClaim"), (
            f"{directory}: patch of {target}; topics and settings belong to the base"
        )
    for item in k.get("replicas", []):
        base_partitions = int(read_env_file(BASE / "fleetledger.env")[f"{PREFIX}PARTITIONS"])
        assert 1 <= item["count"] <= base_partitions, f"{directory}: {item}"


def test_every_kustomization_resource_exists() -> None:
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        k = load_yaml_docs(kfile)[0]
        for resource in k.get("resources", []):
            assert (kfile.parent / resource).exists(), f"{kfile}: {resource} missing"


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=lambda p: p.name)
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_yaml_docs(request.param)[0]


@pytest.fixture(scope="module")
def plain_compose() -> dict[str, Any]:
    return load_yaml_docs(COMPOSE)[0]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): config_str(v) for k, v in env.items()}


def fleetledger_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if any(k.startswith(PREFIX) for k in compose_env(svc))
    }


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in fleetledger_services(compose).items()
        if (svc.get("command") or ["worker"])[0] == "worker"
    }


def kafka_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The brokers (the services running the Kafka image as a KRaft node)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("apache/kafka:")
        and "KAFKA_PROCESS_ROLES" in compose_env(svc)
    }


def test_compose_runs_one_kraft_broker_with_a_healthcheck(compose: dict[str, Any]) -> None:
    brokers = kafka_services(compose)
    assert len(brokers) == 1, "one apache/kafka broker"
    (broker,) = brokers.values()
    env = compose_env(broker)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env), "KRaft, no ZooKeeper"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from the code only"
    assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    assert broker["healthcheck"]["test"], "the workers wait for a healthy broker"


def test_compose_settings_match_the_broker_and_give_valid_topics(
    compose: dict[str, Any],
) -> None:
    (broker_name, broker) = next(iter(kafka_services(compose).items()))
    broker_env = compose_env(broker)
    advertised: dict[str, str] = {}  # host:port -> listener name
    for listener in broker_env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        listener_name, address = listener.split("://", 1)
        advertised[address] = listener_name
    protocols = dict(
        p.split(":") for p in broker_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    workers = worker_services(compose)
    assert workers, "no fleetledger worker service"
    for name, svc in fleetledger_services(compose).items():
        env = compose_env(svc)
        settings = settings_from_env(env, f"docker-compose {name}")
        url = settings.broker_url()
        assert url.kind == "kafka"
        for server in url.bootstrap_servers:
            assert server.partition(":")[0] == broker_name, f"{name}: {server}"
            assert server in advertised, (
                f"{name}: {server} is not an advertised listener of {broker_name}"
            )
            # The listener speaks the protocol (and offers the mechanism) the settings use.
            assert protocols[advertised[server]] == settings.kafka_security_protocol, server
            if settings.kafka_sasl_mechanism is not None:
                enabled = broker_env["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
                assert settings.kafka_sasl_mechanism in enabled, f"{name}: {enabled}"
        check_compose_security(compose, name, svc, settings, env, broker_name)
        # One broker: every topic the worker creates must fit on it.
        for spec in (*topic_specs(settings).all(), *worker_state_specs(settings)):
            assert spec.replication_factor == 1, f"{name}: {spec.name} on one broker"
        assert svc["depends_on"][broker_name]["condition"] == "service_healthy", name
        mounts = {str(v).split(":")[1] for v in svc.get("volumes", [])}
        assert str(settings.archive_dir) in mounts, f"{name}: archive not mounted"
        if name in workers:
            replicas = svc.get("deploy", {}).get("replicas", 1)
            assert isinstance(replicas, int)
            assert 1 <= replicas <= settings.partitions, f"{name}: {replicas} replicas"
            assert svc["healthcheck"]["test"], name
            compile(svc["healthcheck"]["test"][-1], f"{name} healthcheck", "exec")


def check_compose_security(
    compose: dict[str, Any],
    name: str,
    svc: dict[str, Any],
    settings: Settings,
    env: Mapping[str, str],
    broker: str,
) -> None:
    """The files the settings name are mounted; TLS and SCRAM match the broker's setup."""
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", [])}
    for field, path in secret_files(env).items():
        assert str(path.parent) in mounts, f"{name}: {PREFIX}{field.upper()} {path} not mounted"
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    # The certificate the broker gets names the host the clients connect to.
    (maker,) = [
        s for s in compose["services"].values() if "make_secrets.py" in str(s.get("entrypoint"))
    ]
    script = Path(maker["entrypoint"][-1])
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in maker["volumes"]}
    assert (ROOT / mounted[str(script.parent)] / script.name).is_file(), script
    hosts = maker["command"][2:]
    for server in settings.broker_url().bootstrap_servers:
        assert server.rpartition(":")[0] in hosts, f"the broker's certificate is for {hosts}"
    # The SCRAM user the broker gets is the one the settings name, from the same file.
    (adder,) = [
        s for s in compose["services"].values() if "kafka-configs.sh" in str(s.get("command"))
    ]
    command = " ".join(adder["command"])
    assert f"--entity-name {settings.kafka_sasl_username} " in command
    assert f'"{settings.kafka_sasl_mechanism}=[password=' in command
    password = secret_files(env)["kafka_sasl_password_file"]
    volume = mounts[str(password.parent)]
    adder_mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in adder["volumes"]}
    assert f"$$(cat {adder_mounts[volume]}/{password.name})" in command, command
    for dependency in (broker, next(n for n, s in compose["services"].items() if s is adder)):
        assert dependency in svc["depends_on"], f"{name} waits for {dependency}"


def test_compose_workers_are_the_only_topic_creators(compose: dict[str, Any]) -> None:
    """Topics are created by the worker from topic_specs(); a second list would drift."""
    text = yaml.safe_dump(compose)
    assert "kafka-topics.sh" not in text or "--create" not in text
    for svc in compose["services"].values():
        assert "KAFKA_CREATE_TOPICS" not in compose_env(svc)


def test_compose_builds_the_dockerfile_and_mounts_the_signing_key(
    compose: dict[str, Any],
) -> None:
    for name, svc in fleetledger_services(compose).items():
        build = svc["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").resolve() == DOCKERFILE, name
    secrets = compose["secrets"]
    for name, svc in worker_services(compose).items():
        for ref in svc.get("secrets", []):
            source = ref if isinstance(ref, str) else ref["source"]
            assert source in secrets, f"{name}: secret {source} is not declared"
        assert svc.get("secrets"), f"{name}: the signing key is not mounted"
    for secret in secrets.values():
        default = re.fullmatch(r"\$\{[A-Z_]+:-([^}]+)\}", secret["file"])
        path = default.group(1) if default else secret["file"]
        assert (ROOT / path).is_file(), f"secret file {path} missing"


# --------------------------------------------------------------------------- variables


def files_naming_settings() -> Iterator[Path]:
    yield from COMPOSE_FILES
    yield DOCKERFILE
    yield OPERATIONS
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            yield path


def test_every_fleetledger_variable_named_is_a_setting() -> None:
    fields = {f"{PREFIX}{f.upper()}" for f in Settings.model_fields}
    for path in files_naming_settings():
        named = set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
        unknown = named - fields
        assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}, not settings"


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, args = stripped.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def dockerfile_user_id() -> int:
    users = [i.args for i in dockerfile() if i.keyword == "USER"]
    assert users, "the image sets a USER"
    return int(users[-1].split(":")[0])


def test_dockerfile_installs_the_way_the_readme_does() -> None:
    instructions = dockerfile()
    assert instructions[0].keyword == "FROM" and instructions[0].args == "python:3.11-slim"
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    installs = [r for r in runs if re.search(r"\bmake install\b", r)]
    assert len(installs) == 1, "the project is installed by `make install`, once"
    assert not any("pip install" in r or "pip3 install" in r for r in runs), (
        "no second way to install: pip runs only inside `make install`"
    )
    # `make install` is the recipe the README's commands (make demo, make test) run first.
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    prereq = {
        m.group(1): m.group(2).split("##")[0].split()
        for m in re.finditer(r"^([a-z-]+):(.*)$", makefile, re.M)
    }
    assert prereq["install"], "make install has a prerequisite (the installed venv)"
    for target in ("demo", "test"):
        assert set(prereq["install"]) <= set(prereq[target]), target
    # The venv it creates is on PATH at run time.
    venv = re.search(r"^VENV\s*:?=\s*(\S+)", makefile, re.M)
    assert venv is not None
    workdir = "/"
    for i in instructions:
        if i.keyword == "WORKDIR":
            workdir = i.args
        if i.keyword == "RUN" and "make install" in i.args:
            break
    path = [i.args for i in instructions if i.keyword == "ENV" and i.args.startswith("PATH=")]
    assert path and f"{workdir}/{venv.group(1)}/bin" in path[-1]


def test_dockerfile_runs_the_worker_as_a_non_root_user() -> None:
    instructions = dockerfile()
    assert dockerfile_user_id() != 0
    entry = [i.args for i in instructions if i.keyword == "ENTRYPOINT"]
    cmd = [i.args for i in instructions if i.keyword == "CMD"]
    assert yaml.safe_load(entry[-1]) == ["fleetledger"]
    assert yaml.safe_load(cmd[-1]) == ["worker"]
    pyproject = tomllib.loads((ROOT / "processors" / "pyproject.toml").read_text(encoding="utf-8"))
    assert "fleetledger" in pyproject["project"]["scripts"]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` is left out of the build context (last matching pattern wins)."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pat[3:])
            ):
                result = not negate
                break
    return result


def test_dockerignore_keeps_what_make_install_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    needed = {"Makefile", "pyproject.toml", "README.md"}
    for dist in DISTRIBUTIONS:
        needed.add(f"{dist}/pyproject.toml")
        pyproject = tomllib.loads((ROOT / dist / "pyproject.toml").read_text(encoding="utf-8"))
        setuptools = pyproject["tool"]["setuptools"]
        for package, globs in setuptools.get("package-data", {}).items():
            directory = ROOT / dist / "src" / package.replace(".", "/")
            needed.add(str((directory / "__init__.py").relative_to(ROOT)))
            for glob in globs:
                needed.update(str(p.relative_to(ROOT)) for p in directory.glob(glob))
    for path in sorted(needed):
        assert (ROOT / path).exists(), f"{path} is needed to install but missing"
        assert not dockerignored(path, patterns), f".dockerignore leaves out {path}"
    assert dockerignored(".venv/bin/python", patterns), "a local .venv must not be copied"
    assert dockerignored(".git/HEAD", patterns)


# --------------------------------------------------------------------------- the guide


def test_operations_guide_security_settings_are_consistent_and_its_tools_authenticate() -> None:
    """Every block of FLEETLEDGER_* lines in "Secured clusters" is a valid set of settings;
    Kafka's tools on Kubernetes use the tls listener as a user allowed to do what they do."""
    guide = OPERATIONS.read_text(encoding="utf-8")
    section = guide.split("## Secured clusters", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    examples = [b for b in blocks if b.lstrip().startswith("FLEETLEDGER_")]
    assert len(examples) >= 4, "Strimzi, MSK (SCRAM and IAM), Confluent Cloud"
    mechanisms = set()
    for block in examples:
        env = dict(line.strip().split("=", 1) for line in block.splitlines() if line.strip())
        settings = settings_from_env(env, "docs/operations.md")
        assert settings.kafka_security_protocol == "SASL_SSL", block
        mechanisms.add(settings.kafka_sasl_mechanism)
    assert mechanisms == {"SCRAM-SHA-512", "OAUTHBEARER", "PLAIN"}

    base = settings_from_env(read_env_file(BASE / "fleetledger.env"), "deploy/base")
    docs = load_yaml_docs(DEPLOY / "cluster" / "kafka-tools.yaml")
    pod = the_one(docs, "Pod", "kafka-tools")
    user = the_one(docs, "KafkaUser", "fleetledger-operator")
    secrets = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert secrets == {"fleetledger-operator", "fleetledger-cluster-ca-cert"}
    acls = user["spec"]["authorization"]["acls"]
    assert acl_covers(acls, "group", base.group_id, {"Describe", "Read"})
    assert acl_covers(acls, "topic", topic_specs(base).events.name, {"Describe", "Read"})
    commands = re.findall(r"^kt (.*)$", guide, re.M)
    assert commands
    for command in commands:
        assert f"--bootstrap-server {base.broker_url().bootstrap} " in command, command
        assert "--command-config /etc/kafka-tools/client.properties" in command, command


def test_operations_guide_commands_name_real_groups_topics_and_services(
    plain_compose: dict[str, Any],
) -> None:
    compose = plain_compose
    guide = OPERATIONS.read_text(encoding="utf-8")
    compose_settings = settings_from_env(
        compose_env(next(iter(worker_services(compose).values()))), "docker-compose.yml"
    )
    base_settings = settings_from_env(read_env_file(BASE / "fleetledger.env"), "deploy/base")
    groups = {compose_settings.group_id, base_settings.group_id}
    topics = {s.name for s in topic_specs(base_settings).all()}
    topics |= {s.name for s in worker_state_specs(base_settings)}
    topics |= {s.name for s in worker_state_specs(compose_settings)}
    topics |= {leader_topic(base_settings)[0]}
    assert re.findall(r"--group ([\w.-]+)", guide), "the guide shows the consumer-group commands"
    for group in re.findall(r"--group ([\w.-]+)", guide):
        assert group in groups, f"--group {group}"
    for topic in re.findall(r"--topic ([\w.-]+)", guide):
        assert topic in topics, f"--topic {topic}"
    for service, _ in re.findall(r"--scale (\w+)=(\d+)", guide):
        assert service in worker_services(compose), f"--scale {service}"
    for name in re.findall(r"deployment/([a-z0-9-]+)", guide):
        assert name == "fleetledger-worker", f"deployment/{name}"
    assert re.search(r"--reset-offsets\b.*--to-earliest", guide), "the replay command"
    for role in COMPACTED_ROLES | {"events", "ledger", "deadletter"}:
        assert f"{base_settings.topic_prefix}.{role}" in guide, f"the guide names {role}"
    assert parse_broker_url(compose_settings.broker).bootstrap in guide


def test_the_secured_compose_cluster_gets_a_keystore_for_its_hosts_and_a_password(
    tmp_path: Path,
) -> None:
    """deploy/compose/secure/make_secrets.py, as the kafka-secrets service runs it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    from .tls import make_secrets_module

    m = make_secrets_module()
    broker, client = tmp_path / "broker", tmp_path / "client"
    assert m.main([str(broker), str(client), "kafka", "localhost"]) == 0
    password = (broker / "keystore-password").read_bytes()
    key, cert, chain = pkcs12.load_key_and_certificates(
        (broker / "kafka.keystore.p12").read_bytes(), password
    )
    assert key is not None and cert is not None
    ca = x509.load_pem_x509_certificate((client / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert chain == [ca] and (broker / "ca.pem").read_bytes() == (client / "ca.pem").read_bytes()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kafka", "localhost"]
    secret = (client / "fleetledger-password").read_text()
    assert len(secret) >= 24 and secret.strip() == secret
    # A restart keeps what exists.
    before = (broker / "kafka.keystore.p12").read_bytes()
    assert m.main([str(broker), str(client)]) == 0
    assert (broker / "kafka.keystore.p12").read_bytes() == before
