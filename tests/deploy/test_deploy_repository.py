"""berth deploy REPO/: one build context for a model repository, its files, their digests,
the manifests' validation and the refusals."""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from berth.deployment import deploy, main, repository_files, torch_bundle
from berth.deployment.model_file import ModelFile
from berth.repository import ModelConfig, VersionPolicy, parse_config
from conftest import save_script

REPO = Path(__file__).resolve().parents[2]  # tests/deploy/ -> the repository
SIGNATURE = {"berth_format": 1,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 2]}]}
PLAIN_CONFIG = 'inputs = ["x:FP32:-1,3"]\nmax_batch_size = 8\n\n[version_policy]\nall = true\n'


def _linear(seed, n_in, n_out):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """my_repo/: 'signed' (berth.json in the files; versions 1 and 2, default policy:
    latest 1) and 'plain' (plain torch.jit.save files; versions 1 and 2, all served, the
    signature in config.toml)."""
    root = tmp_path_factory.mktemp("repos") / "my_repo"
    for version in (1, 2):
        (root / "signed" / str(version)).mkdir(parents=True)
        save_script(_linear(version, 4, 2), root / "signed" / str(version) / "model.pt", SIGNATURE)
        (root / "plain" / str(version)).mkdir(parents=True)
        save_script(_linear(10 + version, 3, 1), root / "plain" / str(version) / "model.pt")
    (root / "plain" / "config.toml").write_text(PLAIN_CONFIG)
    (root / "README.md").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def context(repo, tmp_path_factory):
    return deploy(repo, out=tmp_path_factory.mktemp("ctx") / "ctx")


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _entrypoint(dockerfile_text):
    return json.loads(dockerfile_text.split("\nENTRYPOINT ", 1)[1].splitlines()[0])


def test_the_context_holds_the_selected_versions_and_configs(repo, context):
    out = context.out
    files = set(context.files)
    assert {f for f in files if f.startswith("repository/")} == {
        "repository/plain/1/model.pt", "repository/plain/2/model.pt", "repository/plain/config.toml",
        "repository/signed/2/model.pt", "repository/signed/config.toml"}
    assert not any(f.startswith("model/") for f in files)
    assert context.models == (("plain", (1, 2)), ("signed", (2,)))
    # copied as they are: the plain files keep no embedded signature
    for relative in ("plain/1/model.pt", "plain/2/model.pt", "signed/2/model.pt"):
        assert (out / "repository" / relative).read_bytes() == (repo / relative).read_bytes()
    plain = parse_config((out / "repository/plain/config.toml").read_text(), "plain")
    assert plain == ModelConfig(inputs=("x:FP32:-1,3",), max_batch_size=8,
                                version_policy=VersionPolicy("all"),
                                sha256={1: _sha(repo / "plain/1/model.pt"), 2: _sha(repo / "plain/2/model.pt")})
    signed = parse_config((out / "repository/signed/config.toml").read_text(), "signed")
    assert signed == ModelConfig(sha256={2: _sha(repo / "signed/2/model.pt")})
    assert (out / "repository/signed/config.toml").read_text() == f'[sha256]\n"2" = "{_sha(repo / "signed/2/model.pt")}"\n'


def test_the_digests_are_the_copied_files(context):
    for config in sorted((context.out / "repository").glob("*/config.toml")):
        table = parse_config(config.read_text(), str(config)).sha256
        assert table and table == {int(p.parent.name): _sha(p) for p in config.parent.glob("*/model.pt*")}


def test_name_image_and_labels_come_from_the_repository(context):
    assert context.name == "my-repo"
    digest = repository_files.repository_digest(
        {str(p.relative_to(context.out)): _sha(p) for p in (context.out / "repository").rglob("*") if p.is_file()})
    assert context.model_sha256 == digest and context.image == f"my-repo:{digest[:12]}"
    deployment = yaml.safe_load((context.out / "k8s/deployment.yaml").read_text())
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == digest[:12]


def test_the_image_serves_the_repository(context):
    dockerfile = (context.out / "Dockerfile").read_text()
    assert "COPY repository/ /opt/berth/repository/\n" in dockerfile
    assert _entrypoint(dockerfile) == ["python3", "-m", "berth", "serve", "/opt/berth/repository", "--host",
                                       "0.0.0.0", "--port", "8080", "--grace-period", "20"]
    assert "BERTH_MODEL_SHA256" not in dockerfile and "COPY model/" not in dockerfile
    assert f'dev.berth.repository.sha256="{context.model_sha256}"' in dockerfile
    assert 'dev.berth.models="plain:1,2 signed:2"' in dockerfile
    assert "for repository my-repo (plain:1,2 signed:2)" in dockerfile
    assert "berth-src/CMakeLists.txt" in context.files  # TorchScript only: built from source
    assert "repository/" in (context.out / ".dockerignore").read_text()


def test_the_readme_and_sample_requests_name_the_models(context):
    readme = (context.out / "README.md").read_text()
    assert "  - `plain`: version(s) 1, 2 (torchscript, policy all); sample request `sample-request.plain.json`" in readme
    assert "  - `signed`: version(s) 2 (torchscript, policy latest 1); sample request `sample-request.signed.json`" in readme
    assert "http://127.0.0.1:8080/v2/models/plain/versions/2/infer" in readme
    assert "--data-binary @sample-request.signed.json" in readme
    assert context.model_sha256 in readme and "BERTH_MODEL_SHA256" not in readme
    assert json.loads((context.out / "sample-request.plain.json").read_text()) == {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 0.0, 0.0]}]}
    assert json.loads((context.out / "sample-request.signed.json").read_text())["inputs"][0]["shape"] == [1, 4]


def test_the_manifests_validate_and_a_wrong_digest_fails(validator, context, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(context.out, broken)
    config = broken / "repository/plain/config.toml"
    config.write_text(re.sub(r'"1" = "[0-9a-f]{64}"', '"1" = "' + "0" * 64 + '"', config.read_text()))
    found = validator(context.out, broken)
    assert found[context.out] == []
    assert any(line.startswith("[berth-rules]") and "repository/plain/config.toml" in line
               and 'sha256 "1"' in line for line in found[broken]), found[broken]


def test_every_option_validates(validator, repo, tmp_path):
    out = deploy(repo, "fleet", out=tmp_path / "ctx", kserve=True, service_monitor=True, grafana=True,
                 namespace="ml", image="registry.local:5000/team/fleet").out
    assert validator(out) == {out: []}


def test_the_same_repository_gives_byte_identical_contexts(repo, context, tmp_path):
    again = deploy(repo, out=tmp_path / "again")
    assert again.model_sha256 == context.model_sha256
    for relative in context.files:
        assert (again.out / relative).read_bytes() == (context.out / relative).read_bytes(), relative


def test_the_cli_deploys_a_repository(repo, tmp_path, capsys):
    assert main([str(repo) + "/", "--out", str(tmp_path / "ctx")]) == 0
    out = capsys.readouterr().out
    assert "  model:   plain (version 1, 2)\n  model:   signed (version 2)\n" in out
    assert main([str(repo), "--out", str(tmp_path / "ctx2"), "--input", "x:FP32:-1,3"]) == 2
    err = capsys.readouterr().err
    assert "berth deploy: error: inputs: --input/--output are for one model file;" in err
    assert "config.toml" in err and not (tmp_path / "ctx2").exists()


def _copy(repo, tmp_path, name="r"):
    target = tmp_path / name
    shutil.copytree(repo, target)
    return target


@pytest.mark.parametrize("case, change, message", [
    ("output option", None, r"outputs: --input/--output are for one model file; '.*' is a model repository"),
    ("bad config", lambda r: (r / "plain/config.toml").write_text("max_batch_size = 0\n"),
     r"model_path: expected every model of repository '.*r' to be servable, got 1 that cannot be: "
     r"plain: .*plain/config.toml: max_batch_size: expected an integer >= 1, got 0"),
    ("bad version dir", lambda r: (r / "signed/v3").mkdir(),
     r"got 1 that cannot be: signed: .*signed/v3: version directory: expected a positive integer"),
    ("two broken", lambda r: ((r / "signed/1/model.pt2").write_bytes(b"x"), (r / "plain/2/model.pt").unlink()),
     r"got 2 that cannot be: plain: .*plain/2: expected exactly one of model.pt or model.pt2, got neither; "
     r"signed: .*signed/1: expected exactly one of model.pt or model.pt2, got both"),
    ("empty", lambda r: [shutil.rmtree(r / m) for m in ("plain", "signed")],
     r"model_path: expected a repository with at least one model .*got none in '.*r'"),
    ("not a model", lambda r: (r / "signed/2/model.pt").write_text("text"),
     r"signed version 2: expected a TorchScript model .* not a zip archive"),
    ("pinned digest", lambda r: (r / "signed/config.toml").write_text('[sha256]\n"2" = "' + "0" * 64 + '"\n'),
     r"signed/config.toml: sha256: \"2\": expected the digest of '.*signed/2/model.pt', [0-9a-f]{64}, got 0{64}"),
    ("second signature", lambda r: (r / "signed/config.toml").write_text('inputs = ["x:FP32:-1,4"]\n'),
     r"signed/config.toml: inputs: expected no inputs/outputs for '.*signed/2/model.pt', which is a file "
     r"that carries its own berth.json; .*remove inputs and outputs"),
    ("signature misfit", lambda r: (r / "plain/config.toml").write_text('inputs = ["a:FP32:-1,3", "b:FP32:-1,3"]\n'),
     r"inputs: the signature from .*r/plain/config.toml does not fit '.*r/plain/2/model.pt': "
     r"berth.json in .* lists 2 inputs but forward takes 1"),
    ("outside symlink", lambda r: (r / "elsewhere").symlink_to(r.parent / "outside", target_is_directory=True),
     r"elsewhere: .*the model directory is a symlink to .*outside the repository"),
])
def test_bad_repositories_are_refused_clearly_and_nothing_is_written(repo, tmp_path, case, change, message):
    target = _copy(repo, tmp_path)
    (tmp_path / "outside" / "1").mkdir(parents=True)
    kwargs = {}
    if change is None:
        kwargs["outputs"] = ["y:FP32:-1,1"]
    else:
        change(target)
    with pytest.raises(ValueError, match=message):
        deploy(target, out=tmp_path / "ctx", **kwargs)
    assert not (tmp_path / "ctx").exists()


def test_a_plain_model_without_inputs_deploys_with_a_warning(repo, tmp_path, capsys):
    target = _copy(repo, tmp_path)
    (target / "plain/config.toml").unlink()
    context = deploy(target, out=tmp_path / "ctx")
    err = capsys.readouterr().err
    assert "plain version 2" in err and "neither batch nor warm it up" in err and "config.toml" in err
    assert context.models == (("plain", (2,)), ("signed", (2,)))
    assert "sample-request.plain.json" not in context.files
    assert "no signature, so no sample request" in (context.out / "README.md").read_text()


def test_a_pt2_anywhere_makes_the_image_carry_libtorch(repo, tmp_path, monkeypatch):
    """The .pt2 path's plumbing, with a stand-in package and bundle (a real .pt2 context
    carries ~350 MB of libtorch; test_deploy_validate builds one for a single model)."""
    import berth.deployment.repository_files as module
    target = _copy(repo, tmp_path)
    (target / "aoti/4").mkdir(parents=True)
    (target / "aoti/4/model.pt2").write_bytes(b"a package" * 1000)
    real_inspect = module.inspect_model

    def inspect(path, argument="model_path"):
        if str(path).endswith(".pt2"):
            return ModelFile(
                path=str(path), sha256=_sha(path), size=Path(path).stat().st_size,
                signature={**SIGNATURE, "torch_version": "2.13.0"}, format="pt2")
        return real_inspect(path, argument)
    checked = []
    monkeypatch.setattr(module, "inspect_model", inspect)
    monkeypatch.setattr(torch_bundle, "check_bundle", lambda sig: checked.append(sig) or (["/x/libtorch.so"], "2.13.0"))
    monkeypatch.setattr(torch_bundle, "bundle_files", lambda libs: {"runtime/lib/libtorch.so": b"elf"})
    context = deploy(target, out=tmp_path / "ctx")
    assert checked == [{**SIGNATURE, "torch_version": "2.13.0"}]
    files = set(context.files)
    assert {"repository/aoti/4/model.pt2", "runtime/lib/libtorch.so", "repository/plain/1/model.pt"} <= files
    assert not any(f.startswith("berth-src/") for f in files)
    dockerfile = (context.out / "Dockerfile").read_text()
    assert "with .pt2 packages,\n# served with the libtorch 2.13.0" in dockerfile
    assert "COPY repository/ /opt/berth/repository/" in dockerfile
    assert _entrypoint(dockerfile)[4] == "/opt/berth/repository"
    volume = yaml.safe_load((context.out / "k8s/deployment.yaml").read_text())["spec"]["template"]["spec"]["volumes"][0]
    assert volume["emptyDir"]["sizeLimit"] == "65Mi"  # 64 Mi + twice the 9000-byte package


def test_deploying_a_repository_imports_no_torch(repo, tmp_path):
    """Only the plain files with config.toml inputs are loaded, by berth's C core."""
    code = ("import sys; from berth.deployment import deploy; deploy(sys.argv[1], out=sys.argv[2]); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(repo), str(tmp_path / "ctx")],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO / "python"), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "False", result.stderr


def test_operator_libraries_go_into_a_repository_image(validator, repo, tmp_path):
    """Any ELF file stands in for an op library (see test_deploy_validate)."""
    from berth import _core
    library = Path(_core.__file__)
    context = deploy(repo, out=tmp_path / "ctx", libraries=[library])
    assert f"libraries/{library.name}" in context.files
    argv = _entrypoint((context.out / "Dockerfile").read_text())
    assert argv[4] == "/opt/berth/repository" and argv[-2:] == ["--library", f"/opt/berth/libraries/{library.name}"]
    assert validator(context.out) == {context.out: []}
