"""Kubernetes objects for one berth model server, as plain dicts.

Every object carries the same ``app.kubernetes.io/*`` labels; selectors use only the
two that never change between versions (name and instance), because a Deployment's
selector is immutable.
"""
from .dockerfile import GRACE_PERIOD_S, RUNTIME_UID, SERVER_PORT

PRESTOP_SLEEP_S = 5
# preStop (endpoints stop routing) + the server's drain + a margin for exit.
TERMINATION_GRACE_S = PRESTOP_SLEEP_S + GRACE_PERIOD_S + 5
SERVICE_PORT = 80
KSERVE_CONTAINER = "kserve-container"


def selector_labels(name):
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def common_labels(name, version):
    return {**selector_labels(name),
            "app.kubernetes.io/version": version,
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/part-of": "berth",
            "app.kubernetes.io/managed-by": "berth"}


def _metadata(name, labels, namespace, annotations=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _probe(path, period, failures, initial=0):
    probe = {"httpGet": {"path": path, "port": "http"}}
    if initial:
        probe["initialDelaySeconds"] = initial
    probe.update({"periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures})
    return probe


def _thread_env(container_name):
    """Threads = the container's CPU limit, rounded up (downward API, divisor 1)."""
    ref = {"resourceFieldRef": {"containerName": container_name, "resource": "limits.cpu",
                                "divisor": "1"}}
    return [{"name": "BERTH_NUM_THREADS", "valueFrom": ref},
            {"name": "OMP_NUM_THREADS", "valueFrom": ref}]


def container(opts, container_name):
    """The model-server container, shared by the Deployment and the InferenceService."""
    return {
        "name": container_name,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": _thread_env(container_name),
        "resources": {"requests": {"cpu": opts.cpu, "memory": opts.memory},
                      "limits": {"cpu": opts.cpu, "memory": opts.memory}},
        # Startup allows 2 minutes for load + warm-up before liveness applies.
        "startupProbe": _probe("/v2/health/ready", 2, 60),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_security():
    return {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def scrape_annotations():
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(SERVER_PORT),
            "prometheus.io/path": "/metrics"}


def deployment(opts):
    labels = common_labels(opts.name, opts.version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(opts.name, labels, opts.namespace),
        "spec": {
            "replicas": opts.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(opts.name)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": scrape_annotations()},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
                    "securityContext": _pod_security(),
                    "containers": [container(opts, opts.name)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": opts.tmp_size}}],
                },
            },
        },
    }


def service(opts):
    labels = common_labels(opts.name, opts.version)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(opts.name, labels, opts.namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(opts.name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def horizontal_pod_autoscaler(opts):
    labels = common_labels(opts.name, opts.version)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(opts.name, labels, opts.namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": opts.name},
            "minReplicas": opts.min_replicas,
            "maxReplicas": opts.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": opts.target_cpu}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def pod_disruption_budget(opts):
    labels = common_labels(opts.name, opts.version)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(opts.name, labels, opts.namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(opts.name)}},
    }


def service_monitor(opts):
    labels = common_labels(opts.name, opts.version)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(opts.name, labels, opts.namespace),
        "spec": {
            "selector": {"matchLabels": selector_labels(opts.name)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def inference_service(opts):
    """A KServe InferenceService with berth's image as the custom predictor container."""
    labels = common_labels(opts.name, opts.version)
    spec_container = container(opts, KSERVE_CONTAINER)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(opts.name, labels, opts.namespace,
                              {"serving.kserve.io/deploymentMode": "RawDeployment",
                               **scrape_annotations()}),
        "spec": {"predictor": {
            "minReplicas": opts.min_replicas,
            "maxReplicas": opts.max_replicas,
            "scaleMetric": "cpu",
            "scaleTarget": opts.target_cpu,
            "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
            "automountServiceAccountToken": False,
            "securityContext": _pod_security(),
            "containers": [spec_container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": opts.tmp_size}}],
        }},
    }


def kustomization(resources, namespace):
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        doc["namespace"] = namespace
    doc["resources"] = list(resources)
    return doc
