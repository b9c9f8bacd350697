"""berth deploy: the files it writes, their determinism, and its refusals."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml  # Debian's python3-yaml: an independent YAML reader for the emitter's output

import berth
from berth.deployment import deploy, main
from berth.deployment import manifests, writer
from berth.deployment.yaml_text import dump
from conftest import berth_pythonpath

REPO = Path(__file__).resolve().parents[2]  # tests/deploy/ -> the repository


def _seed_model_module():
    spec = importlib.util.spec_from_file_location("seed_model", REPO / "tests/image/seed_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return _seed_model_module().save_seed_model(tmp_path_factory.mktemp("model") / "seed.pt")


def _tree(root):
    """{relative path: (mode, bytes)} of every file under root."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): (p.stat().st_mode & 0o777, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(parent):
    return sorted(p.name for p in Path(parent).iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_context_has_every_file_and_sanitizes_the_name(model_path, tmp_path, capsys):
    out = tmp_path / "ctx"
    result = deploy(model_path, "my_model", out=out, kserve=True, service_monitor=True,
                    grafana=True, namespace="ml")
    err = capsys.readouterr().err
    assert "'my_model'" in err and "'my-model'" in err and "RFC 1123" in err
    sha = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    assert result.name == "my-model" and result.model_sha256 == sha
    assert result.image == f"my-model:{sha[:12]}"
    files = set(_tree(out))
    for expected in ["Dockerfile", ".dockerignore", "README.md", "model/model.pt",
                     "build/collect_runtime_libs.py", "k8s/deployment.yaml", "k8s/service.yaml",
                     "k8s/hpa.yaml", "k8s/pdb.yaml", "k8s/kustomization.yaml",
                     "k8s/servicemonitor.yaml", "k8s/grafana-dashboard.yaml",
                     "k8s/kserve/inferenceservice.yaml", "k8s/kserve/kustomization.yaml",
                     "berth-src/CMakeLists.txt", "berth-src/pyproject.toml",
                     "berth-src/python/berth/__init__.py",
                     "berth-src/python/berth/deployment/__init__.py"]:
        assert expected in files, expected
    assert (out / "model/model.pt").read_bytes() == Path(model_path).read_bytes()
    # berth's source, without build outputs
    assert any(f.startswith("berth-src/csrc/") and f.endswith(".c") for f in files)
    assert not [f for f in files if f.endswith((".so", ".pyc", ".o")) or "__pycache__" in f]
    dockerfile = (out / "Dockerfile").read_text()
    assert f"BERTH_MODEL_SHA256={sha}" in dockerfile
    assert f'dev.berth.version="{berth.__version__}"' in dockerfile
    entry = json.loads(dockerfile.split("\nENTRYPOINT ", 1)[1].splitlines()[0])
    assert entry[:5] == ["python3", "-m", "berth", "serve", "/opt/berth/model/model.pt"]
    assert entry[entry.index("--name") + 1] == "my-model"
    assert "latest" not in dockerfile and "USER 10001:10001" in dockerfile
    # the runtime stage installs no compiler and no libtorch package
    runtime = dockerfile.split("# ---- runtime", 1)[1].split("\nFROM ", 1)[1]
    install = runtime.split("apt-get install -y --no-install-recommends", 1)[1]
    packages = [word for word in install.split("&&", 1)[0].replace("\\", " ").split()
                if not word.startswith("-") and "::" not in word]
    assert packages == ["python3", "python3-numpy", "libcjson1", "libmicrohttpd12", "zlib1g",
                        "libopenblas0-pthread"]
    assert runtime.count("apt-get install") == 1
    readme = (out / "README.md").read_text()
    for command in (f"docker build -t {result.image} .", f"docker push {result.image}",
                    "kubectl apply -k k8s/", "kubectl apply -k k8s/kserve/",
                    "/v2/models/my-model/infer"):
        assert command in readme


def test_manifests_read_back_as_the_objects_emitted(model_path, tmp_path):
    out = tmp_path / "ctx"
    deploy(model_path, "fraud", out=out, replicas=3, min_replicas=2, max_replicas=7,
           cpu="1500m", memory="2Gi", target_cpu=60, service_monitor=True, grafana=True)
    dep = yaml.safe_load((out / "k8s/deployment.yaml").read_text())
    assert dep["metadata"]["name"] == "fraud" and dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1500m", "memory": "2Gi"}
    env = {e["name"]: e["valueFrom"]["resourceFieldRef"] for e in container["env"]}
    assert env["BERTH_NUM_THREADS"] == {"containerName": "fraud", "resource": "limits.cpu",
                                        "divisor": "1"}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["terminationGracePeriodSeconds"] > 5 + 20
    hpa = yaml.safe_load((out / "k8s/hpa.yaml").read_text())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    cm = yaml.safe_load((out / "k8s/grafana-dashboard.yaml").read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["berth-fraud.json"])
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("request rate", "latency", "queue", "batch", "error"):
        assert topic in titles
    kust = yaml.safe_load((out / "k8s/kustomization.yaml").read_text())
    assert kust["resources"] == ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml",
                                 "servicemonitor.yaml", "grafana-dashboard.yaml"]


@pytest.mark.parametrize("value", [
    "plain", "true", "False", "yes", "null", "~", "1Gi", "500m", "0755", "1e3", "", " x",
    "a: b", "#x", "x #y", "- item", "it's", 'say "hi"', "tab\there", "ünïcode", "x:",
    "line one\nline two\n", "no newline\nat end", "two\n\n", "[1, 2]", "{a: 1}", "*ref",
    "&anchor", "!tag", "%dir", "@at", "`tick`", "back\\slash", "0x1F", ".5", "-1",
])
def test_yaml_emitter_round_trips_every_awkward_string(value):
    doc = {"key": value, "list": [value, {"nested": value}], value or "empty": 1}
    assert yaml.safe_load(dump(doc)) == doc


def test_yaml_emitter_types_and_layout():
    doc = {"i": 3, "b": False, "n": None, "e": [], "d": {}, "l": [[1, 2], {"a": 1, "b": [3]}]}
    assert yaml.safe_load(dump(doc)) == doc
    with pytest.raises(TypeError, match="value: expected str, int, bool, None, dict or list"):
        dump({"f": 1.5})


def test_same_inputs_give_byte_identical_contexts(model_path, tmp_path):
    one = deploy(model_path, "m", out=tmp_path / "a", kserve=True, grafana=True,
                 service_monitor=True).out
    old = os.umask(0o077)
    try:
        two = deploy(model_path, "m", out=tmp_path / "b", kserve=True, grafana=True,
                     service_monitor=True).out
    finally:
        os.umask(old)
    assert _tree(one) == _tree(two)
    assert {mode for mode, _ in _tree(one).values()} == {0o644}


def test_out_dir_needs_force_and_force_replaces_it(model_path, tmp_path):
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match=r"out: expected a new or empty directory.*--force"):
        deploy(model_path, "m", out=out)
    assert (out / "keep.txt").read_text() == "user data" and len(list(out.iterdir())) == 1
    deploy(model_path, "m", out=out, force=True)
    assert not (out / "keep.txt").exists() and (out / "Dockerfile").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    deploy(model_path, "m", out=empty)
    assert (empty / "Dockerfile").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="out: expected a directory to create"):
        deploy(model_path, "m", out=a_file, force=True)
    assert _leftovers(tmp_path) == []


def _write_zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("case, kwargs, error, message", [
    ("missing model", {"model_path": "nope.pt"}, FileNotFoundError,
     r"model_path: expected an existing TorchScript model file, got '.*nope.pt'"),
    ("text file", {"model_path": "text"}, ValueError,
     r"model_path: expected a TorchScript model .* not a zip archive"),
    ("other zip", {"model_path": "zip"}, ValueError,
     r"model_path: expected a TorchScript model .* no <archive>/data.pkl"),
    ("signed twice", {"inputs": ["x:FP32:-1,10"]}, ValueError,
     r"model_path: .* already carries a berth.json signature"),
    ("bad input option", {"model_path": "nosig", "inputs": ["x:FP99:-1,10"]}, ValueError,
     r"--input: expected a DATATYPE among BOOL, UINT8, .*FP32, FP64 .* got 'FP99'"),
    ("input count", {"model_path": "nosig", "inputs": ["a:FP32:-1,10", "b:FP32:-1,10"]},
     ValueError, r"inputs: the signature from --input/--output does not fit .* lists 2 inputs "
                 r"but forward takes 1"),
    ("output alone", {"model_path": "nosig", "outputs": ["y:FP32:-1,1"]}, ValueError,
     r"outputs: --output needs --input too"),
    ("bad memory", {"memory": "1GBx"}, ValueError,
     r"memory: expected a Kubernetes quantity such as '500m', '2' or '1Gi', got '1GBx'"),
    ("fractional memory", {"memory": "0.5Gi5"}, ValueError, r"memory: expected"),
    ("tiny memory", {"memory": "1Mi"}, ValueError, r"memory: expected at least 64Mi .*got '1Mi'"),
    ("zero cpu", {"cpu": "0"}, ValueError, r"cpu: expected a CPU quantity of at least 1m"),
    ("cpu type", {"cpu": 2}, TypeError, r"cpu: expected a Kubernetes quantity string .* got int 2"),
    ("min > max", {"min_replicas": 5, "max_replicas": 3}, ValueError,
     r"min_replicas: expected at most max_replicas \(3\), got 5"),
    ("replicas outside", {"replicas": 1, "min_replicas": 2, "max_replicas": 5}, ValueError,
     r"replicas: expected a count between min_replicas \(2\) and max_replicas \(5\), got 1"),
    ("zero replicas", {"replicas": 0}, ValueError, r"replicas: expected an integer at least 1, got 0"),
    ("target cpu", {"target_cpu": 150}, ValueError,
     r"target_cpu: expected an integer between 1 and 100, got 150"),
    ("bool replicas", {"replicas": True}, TypeError, r"replicas: expected an integer, got bool"),
    ("hopeless name", {"name": "__!!__"}, ValueError,
     r"name: expected a name with at least one letter or digit \(RFC 1123 label\), got '__!!__'"),
    ("long name", {"name": "x" * 64}, ValueError, r"name: expected at most 63 characters"),
    ("namespace", {"namespace": "Prod_NS"}, ValueError,
     r"namespace: expected an RFC 1123 label .* got 'Prod_NS'"),
    ("latest", {"image": "ghcr.io/acme/m:latest"}, ValueError,
     r"image: expected an immutable tag .* got 'ghcr.io/acme/m:latest'"),
    ("bad image", {"image": "Not An Image"}, ValueError,
     r"image: expected an image reference .* got 'Not An Image'"),
])
def test_bad_input_is_refused_clearly_and_nothing_is_written(
        case, kwargs, error, message, model_path, tmp_path, capsys):
    inputs = {"text": tmp_path / "model.txt", "zip": tmp_path / "other.zip",
              "nosig": tmp_path / "nosig.pt"}
    inputs["text"].write_text("not a model")
    _write_zip(inputs["zip"], {"a/readme.txt": "hello"})
    with zipfile.ZipFile(model_path) as archive:
        _write_zip(inputs["nosig"], {n: archive.read(n) for n in archive.namelist()
                                     if not n.endswith("extra/berth.json")})
    args = {"model_path": model_path, "name": "m", "out": tmp_path / "ctx", **kwargs}
    if args["model_path"] in inputs:
        args["model_path"] = inputs[args["model_path"]]
    elif args["model_path"] == "nope.pt":
        args["model_path"] = tmp_path / "nope.pt"
    with pytest.raises(error, match=message):
        deploy(**args)
    assert not (tmp_path / "ctx").exists()
    assert _leftovers(tmp_path) == []


def test_a_failure_while_writing_leaves_nothing(model_path, tmp_path, monkeypatch):
    real_chmod = os.chmod
    calls = []

    def failing_chmod(path, mode):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real_chmod(path, mode)

    monkeypatch.setattr(writer.os, "chmod", failing_chmod)
    with pytest.raises(OSError, match="No space left"):
        deploy(model_path, "m", out=tmp_path / "ctx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_writes_a_context_and_exits_2_with_a_message_on_bad_input(model_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": berth_pythonpath()}
    ok = subprocess.run([sys.executable, "-m", "berth", "deploy", str(model_path), "--name",
                         "My_Model", "--out", str(tmp_path / "ctx"), "--kserve", "--grafana",
                         "--service-monitor", "--namespace", "ml", "--min-replicas", "1",
                         "--max-replicas", "4", "--cpu", "2", "--memory", "512Mi"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "'My_Model'" in ok.stderr and "'my-model'" in ok.stderr
    assert "kubectl apply -k" in ok.stdout
    assert (tmp_path / "ctx/k8s/kserve/inferenceservice.yaml").is_file()
    bad = subprocess.run([sys.executable, "-m", "berth", "deploy", str(model_path), "--name",
                          "m", "--out", str(tmp_path / "bad"), "--memory", "1GBx"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert "memory: expected a Kubernetes quantity" in bad.stderr and "'1GBx'" in bad.stderr
    assert not (tmp_path / "bad").exists()
    # in-process, the same function
    assert main([str(model_path), "--name", "m", "--out", str(tmp_path / "bad"),
                 "--min-replicas", "4", "--max-replicas", "2"]) == 2
    assert not (tmp_path / "bad").exists()


def test_kserve_predictor_runs_the_same_container(model_path, tmp_path):
    out = deploy(model_path, "m", out=tmp_path / "ctx", kserve=True).out
    isvc = yaml.safe_load((out / "k8s/kserve/inferenceservice.yaml").read_text())
    dep = yaml.safe_load((out / "k8s/deployment.yaml").read_text())
    (predictor_container,) = isvc["spec"]["predictor"]["containers"]
    (deployment_container,) = dep["spec"]["template"]["spec"]["containers"]
    assert predictor_container["name"] == manifests.KSERVE_CONTAINER
    assert predictor_container["image"] == deployment_container["image"]
    assert predictor_container["env"][0]["valueFrom"]["resourceFieldRef"]["containerName"] \
        == manifests.KSERVE_CONTAINER
    # not in the plain kustomization: applying both would run the model twice
    assert "inferenceservice.yaml" not in (out / "k8s/kustomization.yaml").read_text()


def test_berth_source_dir_names_the_source_to_ship(model_path, tmp_path, monkeypatch):
    from berth.deployment.source_tree import source_files
    copy = tmp_path / "src"
    for rel, full in source_files(REPO):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(full.read_bytes())
    (copy / "csrc" / "marker.h").write_text("/* from BERTH_SOURCE_DIR */\n")
    monkeypatch.setenv("BERTH_SOURCE_DIR", str(copy))
    out = deploy(model_path, "m", out=tmp_path / "ctx").out
    assert (out / "berth-src/csrc/marker.h").read_text() == "/* from BERTH_SOURCE_DIR */\n"
    monkeypatch.setenv("BERTH_SOURCE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"BERTH_SOURCE_DIR: expected a berth source "
                                                r"tree .* got '.*nowhere'"):
        deploy(model_path, "m", out=tmp_path / "ctx2")
    assert not (tmp_path / "ctx2").exists()


def test_source_bundled_inside_the_package_is_preferred_to_the_checkout(tmp_path, monkeypatch):
    """A pip-installed berth finds its source in berth/_source/ (put there by the build, CMakeLists.txt)."""
    from berth.deployment import source_tree
    package = tmp_path / "site-packages" / "berth"
    (package / "deployment").mkdir(parents=True)
    bundled = package / "_source"
    # what the build does at install time (it runs source_tree.py by path)
    spec = importlib.util.spec_from_file_location(
        "source_tree_by_path", REPO / "python/berth/deployment/source_tree.py")
    by_path = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(by_path)
    assert by_path.bundle_source(REPO, bundled) == len(source_tree.source_files(REPO))
    assert source_tree.is_source_root(bundled)
    monkeypatch.delenv("BERTH_SOURCE_DIR", raising=False)
    monkeypatch.setattr(source_tree, "__file__", str(package / "deployment" / "source_tree.py"))
    assert source_tree.find_source_root() == bundled.resolve()
    import shutil
    shutil.rmtree(bundled)
    with pytest.raises(FileNotFoundError, match="set BERTH_SOURCE_DIR to a berth checkout"):
        source_tree.find_source_root()


def _plain_copy(model_path, path):
    """The seed model without its berth.json: what a plain torch.jit.save writes."""
    with zipfile.ZipFile(model_path) as archive:
        _write_zip(path, {n: archive.read(n) for n in archive.namelist()
                          if not n.endswith("extra/berth.json")})
    return path


def test_the_context_ships_a_sample_request_that_the_readme_posts(model_path, tmp_path):
    out = tmp_path / "ctx"
    deploy(model_path, "m", out=out)
    body = json.loads((out / "sample-request.json").read_bytes())
    assert body["inputs"][0]["name"] == "dense_input" and body["inputs"][0]["shape"] == [1, 10]
    readme = (out / "README.md").read_text()
    assert "--data-binary @sample-request.json" in readme and " -d '" not in readme
    assert "sample-request.*" in (out / ".dockerignore").read_text()


def test_a_plain_torchscript_file_deploys_and_says_how_to_give_a_signature(model_path, tmp_path, capsys):
    plain = _plain_copy(model_path, tmp_path / "plain.pt")
    result = deploy(plain, out=tmp_path / "ctx")  # the name defaults from the file, as in serve
    assert result.name == "plain"
    err = capsys.readouterr().err
    assert "without a signature" in err and "--input NAME:DATATYPE:SHAPE" in err
    files = set(_tree(tmp_path / "ctx"))
    assert not any(f.startswith("sample-request") for f in files)
    readme = (tmp_path / "ctx" / "README.md").read_text()
    assert "carries no signature" in readme and "--input x:FP32:-1,10" in readme
    assert (tmp_path / "ctx/model/model.pt").read_bytes() == plain.read_bytes()


def test_input_options_embed_a_signature_the_server_reads(model_path, tmp_path):
    plain = _plain_copy(model_path, tmp_path / "plain.pt")
    result = deploy(plain, "plain", out=tmp_path / "ctx", inputs=["x:FP32:-1,10"],
                    outputs=["y:FP32:-1,1"])
    deployed = tmp_path / "ctx/model/model.pt"
    assert result.model_sha256 == hashlib.sha256(deployed.read_bytes()).hexdigest()
    assert f"BERTH_MODEL_SHA256={result.model_sha256}" in (tmp_path / "ctx/Dockerfile").read_text()
    model = berth.load(deployed)
    assert [(s.name, s.dtype, s.shape) for s in model.inputs] == [("x", "float32", (-1, 10))]
    assert [(s.name, s.shape) for s in model.outputs] == [("y", (-1, 1))]
    x = np.ones((2, 10), np.float32)
    np.testing.assert_array_equal(model.predict(x), berth.load(model_path).predict(x))
    assert json.loads((tmp_path / "ctx/sample-request.json").read_bytes())["inputs"][0]["name"] == "x"


def test_input_options_alone_embed_outputs_learnt_from_a_probe_forward(model_path, tmp_path, capsys):
    """--input without --output: the deployed copy carries the outputs two forwards on
    zeros told, so the image's server batches it."""
    plain = _plain_copy(model_path, tmp_path / "plain.pt")
    deploy(plain, "plain", out=tmp_path / "ctx", inputs=["x:FP32:-1,10"])
    assert "outputs learnt from a probe forward: output_0: float32 (-1, 1)" in capsys.readouterr().err
    model = berth.load(tmp_path / "ctx/model/model.pt")
    assert model.outputs == (berth.TensorSpec("output_0", "float32", (-1, 1)),) and model.batchable
    x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(3, 10)
    np.testing.assert_array_equal(model.predict(x), berth.load(model_path).predict(x))


def test_big_inputs_get_a_binary_sample_request(tmp_path):
    import torch
    from conftest import save_script

    class Mean(torch.nn.Module):
        def forward(self, image):
            return image.mean(dim=(1, 2, 3)).unsqueeze(1)

    plain = save_script(Mean(), tmp_path / "image.pt")
    deploy(plain, out=tmp_path / "ctx", inputs=["image:FP32:-1,3,224,224"])
    data = (tmp_path / "ctx/sample-request.bin").read_bytes()
    readme = (tmp_path / "ctx/README.md").read_text()
    header = int(readme.split("Inference-Header-Content-Length: ", 1)[1].split("'", 1)[0])
    assert "--data-binary @sample-request.bin" in readme
    head = json.loads(data[:header])
    assert head["inputs"][0]["parameters"]["binary_data_size"] == 3 * 224 * 224 * 4
    assert len(data) == header + 3 * 224 * 224 * 4
    # The file is a request the protocol takes: the C codec answers it.
    from berth import _core
    service = _core.Service(berth.load(tmp_path / "ctx/model/model.pt"), "image")
    try:
        status, _, out = service.handle("POST", "/v2/models/image/infer", data,
                                        "application/octet-stream", None, str(header))
        assert status == 200 and json.loads(out)["outputs"][0]["shape"] == [1, 1]
    finally:
        service.close()


def test_cli_takes_a_plain_file_without_a_name_and_input_options(model_path, tmp_path):
    plain = _plain_copy(model_path, tmp_path / "plain.pt")
    assert main([str(plain), "--out", str(tmp_path / "ctx"), "--input", "x:FP32:-1,10"]) == 0
    assert (tmp_path / "ctx/sample-request.json").is_file()
    assert main([str(plain), "--out", str(tmp_path / "bad"), "--input", "x:FP32"]) == 2


def _entrypoint(dockerfile_text):
    line = next(line for line in dockerfile_text.splitlines() if line.startswith("ENTRYPOINT "))
    return json.loads(line[len("ENTRYPOINT "):])


def test_operator_libraries_go_into_the_image_and_the_entrypoint_loads_them(tmp_path):
    """deploy --library: the context carries the library, the Dockerfile copies it and loads
    it at build time, the entrypoint passes --library with its path in the image; run here
    with those paths mapped back into the context, the entrypoint's server answers as torch
    does."""
    import torch
    from conftest import custom_op_model
    from serve_process import JSON_HEADERS, ServeProcess
    model, library = custom_op_model(tmp_path)
    out = tmp_path / "ctx"
    assert main([model, "--name", "custom", "--out", str(out), "--library", library,
                 "--input", "x:FP32:-1"]) == 0
    name = os.path.basename(library)
    assert (out / "libraries" / name).read_bytes() == Path(library).read_bytes()
    dockerfile = (out / "Dockerfile").read_text()
    in_image = f"/opt/berth/libraries/{name}"
    assert "COPY libraries/ /opt/berth/libraries/\n" in dockerfile
    assert f"load_libraries(sys.argv[1:], '--library')\" \\\n        {in_image}\n" in dockerfile
    argv = _entrypoint(dockerfile)
    assert argv[:5] == ["python3", "-m", "berth", "serve", "/opt/berth/model/model.pt"]
    assert argv[-2:] == ["--library", in_image]
    assert f"`libraries/{name}`" in (out / "README.md").read_text()
    args, rest = [], iter(argv[5:])
    for arg in rest:
        if arg in ("--host", "--port"):
            next(rest)
        else:
            args.append(str(out / "libraries" / name) if arg == in_image else arg)
    server = ServeProcess(out / "model" / "model.pt", *args)
    try:
        x = np.array([0.5, -1.0, 3.0], np.float32)
        body = json.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32",
                                       "data": x.tolist()}]}).encode()
        status, _, reply = server.request("POST", "/v2/models/custom/infer", body, JSON_HEADERS)
        torch.ops.load_library(library)
        want = torch.ops.aoti_custom_ops.custom_add(torch.from_numpy(x), torch.from_numpy(x))
        assert status == 200, reply
        np.testing.assert_array_equal(json.loads(reply)["outputs"][0]["data"], want.numpy())
    finally:
        assert server.stop() == 0


def test_bad_operator_libraries_are_refused_and_nothing_is_written(model_path, tmp_path):
    text = tmp_path / "notes.so"
    text.write_text("not a library")
    elf = Path(sys.executable).resolve()  # an ELF file that exists everywhere
    other = tmp_path / "other"
    other.mkdir()
    (other / elf.name).write_bytes(elf.read_bytes()[:64])
    cases = [
        ("libop.so", ValueError, r"libraries: expected an existing shared library, got '.*libop.so'"),
        (text, ValueError, r"libraries: expected a shared library \(an ELF file.* starts with b'not '"),
        ([elf, other / elf.name], ValueError, r"libraries: expected libraries with distinct file names"),
    ]
    for libraries, error, message in cases:
        if not isinstance(libraries, list):
            libraries = [tmp_path / libraries if isinstance(libraries, str) else libraries]
        with pytest.raises(error, match=message):
            deploy(model_path, "m", out=tmp_path / "ctx", libraries=libraries)
        assert not (tmp_path / "ctx").exists()
    with pytest.raises(TypeError, match="libraries: expected a list of paths to shared libraries, got str"):
        deploy(model_path, "m", out=tmp_path / "ctx", libraries=str(elf))


def test_a_library_that_does_not_load_here_leaves_the_signature_check_to_the_image(model_path, tmp_path, capsys):
    """A library built for the image's libtorch may not load into this one: deploy says
    so, skips its own check of the --input signature, and still writes the context (the
    image build loads the library, the image's server checks the signature)."""
    plain = _plain_copy(model_path, tmp_path / "plain.pt")
    executable = Path(sys.executable).resolve()  # an ELF file dlopen refuses
    deploy(plain, "plain", out=tmp_path / "ctx", inputs=["x:FP32:-1,10"], libraries=[executable])
    err = capsys.readouterr().err
    assert "berth deploy: not checking the signature here: cannot load the operator library" in err, err
    assert (tmp_path / "ctx/libraries" / executable.name).read_bytes() == executable.read_bytes()
    assert berth.load(tmp_path / "ctx/model/model.pt").inputs[0].shape == (-1, 10)
