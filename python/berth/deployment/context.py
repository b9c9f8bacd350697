"""Assembling a build context: every file's bytes, decided before anything is written."""
import hashlib

from . import dockerfile, grafana, manifests, op_libraries, repository_files, torch_bundle
from .._version import __version__
from .collect_runtime_libs import __file__ as _collector_path
from .context_readme import render_readme, render_repository_readme
from .model_file import MODEL_FILENAMES, sample_request_file
from .source_tree import find_source_root, source_files
from .yaml_text import dump


def k8s_documents(opts):
    """(file name, object) pairs for k8s/, in kustomization order."""
    docs = [("deployment.yaml", manifests.deployment(opts)),
            ("service.yaml", manifests.service(opts)),
            ("hpa.yaml", manifests.horizontal_pod_autoscaler(opts)),
            ("pdb.yaml", manifests.pod_disruption_budget(opts))]
    if opts.service_monitor:
        docs.append(("servicemonitor.yaml", manifests.service_monitor(opts)))
    if opts.grafana:
        labels = manifests.common_labels(opts.name, opts.version)
        docs.append(("grafana-dashboard.yaml", grafana.dashboard_config_map(opts, labels)))
    return docs


def _k8s_files(opts, files):
    """Adds k8s/ to ``files``; returns (the k8s/ file names, the k8s/kserve/ ones)."""
    k8s = k8s_documents(opts)
    for filename, doc in k8s:
        files[f"k8s/{filename}"] = dump(doc).encode()
    names = [filename for filename, _ in k8s]
    files["k8s/kustomization.yaml"] = dump(manifests.kustomization(names, opts.namespace)).encode()
    kserve_files = []
    if opts.kserve:
        files["k8s/kserve/inferenceservice.yaml"] = dump(manifests.inference_service(opts)).encode()
        files["k8s/kserve/kustomization.yaml"] = dump(
            manifests.kustomization(["inferenceservice.yaml"], opts.namespace)).encode()
        kserve_files = ["kserve/inferenceservice.yaml"]
    return names, kserve_files


def _image_files(files, *, name, model_filename, sha256, pt2_signatures, in_image, models=None):
    """Adds the Dockerfile, .dockerignore and what the image is built from: for .pt2
    (``pt2_signatures`` not empty) berth and libtorch as built here, else berth's source."""
    if pt2_signatures:
        torch_version = None
        for signature in pt2_signatures:
            libraries, torch_version = torch_bundle.check_bundle(signature)
        files["Dockerfile"] = dockerfile.render_prebuilt_dockerfile(
            name=name, model_filename=model_filename, model_sha256=sha256, berth_version=__version__,
            torch_version=torch_version or "unknown", libraries=in_image, models=models).encode()
        files[".dockerignore"] = dockerfile.dockerignore(dockerfile.PREBUILT_DOCKERIGNORE, models).encode()
        files.update(torch_bundle.bundle_files(libraries))
    else:
        files["Dockerfile"] = dockerfile.render_dockerfile(
            name=name, model_filename=model_filename, model_sha256=sha256,
            berth_version=__version__, libraries=in_image, models=models).encode()
        files[".dockerignore"] = dockerfile.dockerignore(dockerfile.DOCKERIGNORE, models).encode()
        with open(_collector_path, "rb") as handle:
            files["build/collect_runtime_libs.py"] = handle.read()
        for relative, full in source_files(find_source_root()):
            with open(full, "rb") as handle:
                files[f"berth-src/{relative}"] = handle.read()


def build_files(opts, model, operator_libraries=()):
    """{relative path: bytes, or a Path to copy} for the whole context;
    ``operator_libraries``: ``op_libraries.check_libraries``'s (name, Path) pairs."""
    version = __version__
    in_image = op_libraries.image_paths(operator_libraries)
    model_filename = MODEL_FILENAMES[model.format]
    files = {}
    names, kserve_files = _k8s_files(opts, files)
    _image_files(files, name=opts.name, model_filename=model_filename, sha256=model.sha256,
                 pt2_signatures=[model.signature] if model.format == "pt2" else [], in_image=in_image)
    if model.data is not None:  # a copy with an embedded signature
        model_bytes = model.data
    else:
        with open(model.path, "rb") as handle:
            model_bytes = handle.read()
    if hashlib.sha256(model_bytes).hexdigest() != model.sha256:
        raise RuntimeError(f"model_path: expected {model.path!r} to stay unchanged while "
                           "deploying, got different bytes on the second read")
    files[f"model/{model_filename}"] = model_bytes
    files.update(op_libraries.context_files(operator_libraries))
    sample = None
    if model.signature is not None:
        sample = sample_request_file(model.signature)
        files[sample[0]] = sample[1]
    files["README.md"] = render_readme(
        opts=opts, model=model, model_filename=model_filename, berth_version=version,
        k8s_files=names + ["kustomization.yaml"], kserve_files=kserve_files,
        sample=sample, libraries=[name for name, _ in operator_libraries]).encode()
    return files


def build_repository_files(opts, models, operator_libraries=()):
    """{relative path: bytes, a Path or a writer} for a repository's context: ``models``,
    ``repository_files.read_repository``'s list, under repository/ (see that module)."""
    files, digests = repository_files.model_files(models)
    digest = repository_files.repository_digest(digests)
    described = repository_files.describe(models)
    names, kserve_files = _k8s_files(opts, files)
    pt2 = [model.signature for deployed in models for model in deployed.versions.values()
           if model.format == "pt2"]
    _image_files(files, name=opts.name, model_filename=None, sha256=digest,
                 pt2_signatures=pt2, in_image=op_libraries.image_paths(operator_libraries), models=described)
    files.update(op_libraries.context_files(operator_libraries))
    samples = repository_files.sample_files(models)
    for filename, data, _ in samples.values():
        files[filename] = data
    files["README.md"] = render_repository_readme(
        opts=opts, models=models, digest=digest, berth_version=__version__,
        k8s_files=names + ["kustomization.yaml"], kserve_files=kserve_files, samples=samples,
        libraries=[name for name, _ in operator_libraries]).encode()
    return files
