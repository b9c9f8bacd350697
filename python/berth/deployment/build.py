"""``deploy``: a saved model, or a model repository, to a build context on disk (what
``python -m berth deploy`` runs; see the package's docstring)."""
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import repository_files
from .load_check import check_loads
from .context import build_files, build_repository_files
from .model_file import inspect_model, signature_from_options, with_signature
from .names import sanitize_name
from .op_libraries import check_libraries
from .options import (DeployOptions, TAG_LENGTH, image_reference, namespace_name,
                      positive_int, replica_range)
from .quantities import cpu_quantity, memory_quantity
from .writer import check_destination, write_tree


def tmp_size(*models):
    """The writable /tmp a pod needs: a .pt2 is unpacked there at start (twice its size
    leaves room for the unpacked copy and the loader's scratch), with 64 MiB beside;
    every .pt2 of a repository is loaded at once."""
    extra = sum(2 * model.size for model in models if model.format == "pt2")
    return f"{64 + -(-extra // (1 << 20))}Mi"


@dataclass(frozen=True)
class BuildContext:
    """What ``deploy`` wrote: the directory, the Kubernetes name, the image and files."""
    out: Path
    name: str
    image: str
    model_sha256: str       # for a repository: its digest (repository_files.repository_digest)
    files: tuple
    models: tuple = ()      # for a repository: ((name, (version, ...)), ...)


def deploy(model_path, name=None, out=None, image=None, replicas=2, cpu="1", memory="1Gi",
           min_replicas=None, max_replicas=None, target_cpu=70, namespace=None,
           kserve=False, service_monitor=False, grafana=False, force=False,
           inputs=None, outputs=None, libraries=None):
    """Write a build context and manifests for serving ``model_path`` as ``name``.

    ``name`` defaults to the file's name without its extension, as in ``serve``, and is
    made an RFC 1123 label (``my_model`` -> ``my-model``, noted on stderr). A plain
    TorchScript file (no berth.json) deploys too; ``inputs`` (and ``outputs``), lists of
    ``NAME:DATATYPE:SHAPE``, give it a signature, embedded into the deployed copy, which
    the server needs to batch and warm up and the README's sample request is made from.
    ``libraries``: paths of custom-operator libraries the model needs (e.g. torchvision's
    ``_C.so``), copied into the context's ``libraries/`` and loaded by the image's server
    before the model (``serve --library``); each must be built against the image's
    libtorch (Debian's for a TorchScript model, the carried one for a ``.pt2``), and the
    image build loads them once to prove it.
    ``model_path`` may be a model repository directory (``REPO/<model>/<version>/
    model.pt[2]``, ``berth.repository``): one context serves every model, with the
    versions each one's version policy selects; ``name`` then defaults to the directory's
    name, and ``inputs``/``outputs`` are refused (each model's config.toml gives them).
    ``image`` defaults to ``NAME:<first 12 hex digits of the model's sha256>`` (of the
    repository's digest, for a repository); a
    repository without a tag gets that tag; ``:latest`` is refused. ``out`` defaults to
    ``./NAME-deploy``; an existing non-empty directory is replaced only with ``force``.
    All checks run before anything is written, and the directory appears whole or not
    at all. Returns a :class:`BuildContext`.
    """
    repository = isinstance(model_path, (str, os.PathLike)) and os.path.isdir(model_path)
    if repository and (inputs or outputs):
        flag = "inputs" if inputs else "outputs"
        raise ValueError(f"{flag}: --input/--output are for one model file; {str(model_path)!r} is a "
                         "model repository, whose models give their signatures in config.toml "
                         "(inputs = [\"x:FP32:-1,10\"], outputs = [...]), got "
                         f"{list(inputs or outputs)}")
    if name is None and repository:
        name = Path(model_path).resolve().name or "repository"
    elif name is None:
        from ..serving.cli import model_name_from_path
        name = model_name_from_path(os.fspath(model_path)) \
            if isinstance(model_path, (str, os.PathLike)) else "model"
    k8s_name = sanitize_name(name)
    if k8s_name != name:
        print(f"berth deploy: name {name!r} is not a valid Kubernetes name (RFC 1123 label); "
              f"using {k8s_name!r}", file=sys.stderr)
    replicas, low, high = replica_range(replicas, min_replicas, max_replicas)
    opts_partial = dict(
        name=k8s_name, replicas=replicas, min_replicas=low, max_replicas=high,
        target_cpu=positive_int(target_cpu, "target_cpu", 1, 100),
        cpu=cpu_quantity(cpu), memory=memory_quantity(memory),
        namespace=namespace_name(namespace),
        kserve=bool(kserve), service_monitor=bool(service_monitor), grafana=bool(grafana))
    out = Path(out if out is not None else f"{k8s_name}-deploy")
    check_destination(out, force)
    libraries = check_libraries(libraries)
    if repository:
        return _deploy_repository(model_path, out, image, opts_partial, libraries, force)
    model = inspect_model(model_path)
    if outputs and not inputs:
        raise ValueError("outputs: --output needs --input too (a signature lists inputs)")
    if inputs:
        plain = model
        model = with_signature(plain, signature_from_options(inputs, outputs or ()))
        learnt = check_loads(model, libraries, probe=not outputs)
        if learnt:  # the deployed copy carries them, so the image's server batches
            model = with_signature(plain, signature_from_options(inputs, [tuple(s) for s in learnt]))
    elif model.signature is None:
        print(f"berth deploy: {model.path} is a plain TorchScript file without a signature: "
              "the context has no sample request and the server will neither batch nor warm "
              "it up; give one with --input NAME:DATATYPE:SHAPE (repeatable)", file=sys.stderr)
    opts = DeployOptions(image=image_reference(image, k8s_name, model.sha256),
                         version=model.sha256[:TAG_LENGTH], tmp_size=tmp_size(model), **opts_partial)
    files = build_files(opts, model, libraries)
    written = write_tree(out, files, force=force)
    return BuildContext(out=written, name=k8s_name, image=opts.image,
                        model_sha256=model.sha256, files=tuple(sorted(files)))


def _deploy_repository(path, out, image, opts_partial, libraries, force):
    models = repository_files.read_repository(path)
    repository_files.check_signatures(models, libraries)
    digest = repository_files.digest_of(models)
    name = opts_partial["name"]
    opts = DeployOptions(image=image_reference(image, name, digest), version=digest[:TAG_LENGTH],
                         tmp_size=tmp_size(*(m for d in models for m in d.versions.values())),
                         **opts_partial)
    files = build_repository_files(opts, models, libraries)
    written = write_tree(out, files, force=force)
    return BuildContext(out=written, name=name, image=opts.image, model_sha256=digest,
                        files=tuple(sorted(files)),
                        models=tuple((d.name, tuple(sorted(d.versions))) for d in models))
