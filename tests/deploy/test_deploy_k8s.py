"""deploy/k8s: built-in kinds against kubernetes-validate's schemas (strict), custom
resources against the schemas in tests/deploy/schemas, and the wiring between them."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from referencing import Registry, Resource

from consumers.settings import BatchSettings, KafkaSettings
from tests.deploy.manifests import (
    allowed_env_names,
    k8s_kind,
    load_k8s,
    medocr_containers,
)
from tests.deploy.tools import SCHEMAS

pytestmark = pytest.mark.deploy

# The oldest Kubernetes minor the manifests promise to work on, and the newest schema
# the installed kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    (
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
    ): "keda-triggerauthentication-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor-v1.json",
}


def _custom_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    registry: Registry = Registry()
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text("utf-8"))
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    schema = json.loads(
        (SCHEMAS / CUSTOM_SCHEMAS[(api_version, kind)]).read_text("utf-8")
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(document: dict[str, Any], version: str) -> None:
    key = (document["apiVersion"], document["kind"])
    if key in CUSTOM_SCHEMAS:
        _custom_validator(*key).validate(document)
    else:
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_their_schemas(version: str) -> None:
    documents = load_k8s()
    kinds = {document["kind"] for _, document in documents}
    assert {
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
    } <= kinds
    for path, document in documents:
        try:
            _validate(document, version)
        except (
            jsonschema.ValidationError,
            kubernetes_validate.utils.SchemaNotFoundError,
        ) as exc:
            pytest.fail(
                f"{path.name} {document['kind']}: {getattr(exc, 'message', exc)}"
            )


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(k8s_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 300
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "lagThreshold"), 32),
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "lagTreshold"), "32"),
        ("ScaledObject", ("spec", "maxReplicas"), 6),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15 seconds"),
        ("TriggerAuthentication", ("spec", "secretTargetRef", 0, "secret"), "x"),
    ],
)
def test_custom_resource_schemas_reject_mistakes(
    kind: str, path: tuple[str | int, ...], value: object
) -> None:
    document = copy.deepcopy(k8s_kind(kind)[0])
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate(document, KUBERNETES_VERSIONS[0])


def _component(kind: str, component: str) -> dict[str, Any]:
    """The one ``kind`` labelled ``app.kubernetes.io/component: component``."""
    (document,) = [
        document
        for document in k8s_kind(kind)
        if document["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return document


def _deployment(component: str = "worker") -> dict[str, Any]:
    return _component("Deployment", component)


def _worker(component: str = "worker") -> dict[str, Any]:
    (container,) = medocr_containers(_deployment(component))
    return container


def test_every_deployment_is_the_worker_or_the_gateway() -> None:
    components = sorted(
        document["metadata"]["labels"]["app.kubernetes.io/component"]
        for document in k8s_kind("Deployment")
    )
    assert components == ["gateway", "worker"]


def _env_values(container: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container["env"]
    }


@pytest.mark.parametrize("component", ["worker", "gateway"])
def test_containers_set_only_settings_medocr_reads(component: str) -> None:
    container = _worker(component)
    assert set(_env_values(container)) - allowed_env_names() == set()
    assert "envFrom" not in container  # every name stays visible to this check


def test_probes_resources_and_grace_period() -> None:
    worker = _worker()
    # /health answers 200 while the model loads and 503 once failed or stalled:
    # the restart probes; /ready (503 also while loading or draining) gates traffic
    assert worker["startupProbe"]["httpGet"]["path"] == "/health"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/health"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/ready"
    env = _env_values(worker)
    # one vLLM engine spans TENSOR_PARALLEL_SIZE GPUs: the pod must ask for that many
    gpus = int(env.get("TENSOR_PARALLEL_SIZE", "1"))
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == gpus
    drain_s = float(
        env.get(
            "OCR_DRAIN_TIMEOUT_S", BatchSettings.model_fields["drain_timeout_s"].default
        )
    )
    grace_s = _deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > drain_s + 30  # drain, then commit and close before SIGKILL
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"


def test_sasl_credentials_come_from_a_secret() -> None:
    env = _env_values(_worker())
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert set(env[name]) == {"secretKeyRef"}, name


def test_the_api_key_comes_from_a_secret_the_monitor_also_reads() -> None:
    """The sidecar listens on 0.0.0.0: the key is required, and Prometheus sends it."""
    env = _env_values(_worker())
    assert env["HOST"] == "0.0.0.0"
    ref = env["API_KEY"]["secretKeyRef"]
    assert not ref.get("optional", False)  # no Secret, no pod: never an open /metrics
    (endpoint,) = k8s_kind("ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["authorization"]["type"] == "Bearer"
    credentials = endpoint["authorization"]["credentials"]
    assert (credentials["name"], credentials["key"]) == (ref["name"], ref["key"])
    # created with kubectl (deploy/README.md), never shipped with a placeholder value
    assert not k8s_kind("Secret")


def test_autoscaling_follows_the_workers_consumer_group() -> None:
    env = _env_values(_worker())
    scaled = k8s_kind("ScaledObject")[0]["spec"]
    assert scaled["scaleTargetRef"]["name"] == _deployment()["metadata"]["name"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert (
        trigger["metadata"]["consumerGroup"]
        == env["OCR_CONSUMER_GROUP"]
        == "medocr-workers"
    )
    assert trigger["metadata"]["topic"] == env["OCR_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    partitions = KafkaSettings.model_fields["partitions"].default
    assert scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    auth = k8s_kind("TriggerAuthentication")[0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
    assert {"sasl", "username", "password"} <= parameters


def test_pdb_service_and_monitor_select_the_worker_pods() -> None:
    pod_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    pdb = k8s_kind("PodDisruptionBudget")[0]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    service = _component("Service", "worker")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    monitor = k8s_kind("ServiceMonitor")[0]["spec"]
    assert (
        monitor["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    assert {endpoint["port"] for endpoint in monitor["endpoints"]} <= port_names
    assert all(endpoint["path"] == "/metrics" for endpoint in monitor["endpoints"])


def test_gateway_runs_the_cpu_image_with_its_own_key_and_probes() -> None:
    gateway = _worker("gateway")
    assert gateway["args"] == ["gateway"]
    assert gateway["image"].endswith("-cpu")  # no GPU, no vLLM: deploy/Dockerfile.cpu
    assert "nvidia.com/gpu" not in gateway["resources"].get("limits", {})
    env = _env_values(gateway)
    assert env["HOST"] == "0.0.0.0"
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert set(env[name]) == {"secretKeyRef"}, name
    # It refuses to start without a key; a Secret of its own, not the /metrics key
    # that Prometheus holds: this one is handed to every client of the API.
    key = env["API_KEY"]["secretKeyRef"]
    assert not key.get("optional", False)
    assert key["name"] != _env_values(_worker())["API_KEY"]["secretKeyRef"]["name"]
    (port,) = gateway["ports"]
    assert str(port["containerPort"]) == env["PORT"]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in gateway["volumeMounts"]


def test_gateway_service_selects_the_gateway_pods_only() -> None:
    pod_labels = _deployment("gateway")["spec"]["template"]["metadata"]["labels"]
    service = _component("Service", "gateway")["spec"]
    assert service["selector"].items() <= pod_labels.items()
    worker_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= worker_labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] == "http"
