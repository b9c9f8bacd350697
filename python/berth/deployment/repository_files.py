"""``berth deploy REPO/``: what a model repository puts into a build context.

The context holds ``repository/<model>/<version>/model.pt[2]`` for the versions each
model's version policy selects, and ``repository/<model>/config.toml``: the model's
config (``ModelConfig.to_toml``) with ``[sha256]`` holding every copied version's
digest, which the server checks at start. The files are copied as they are (a plain
TorchScript file keeps no embedded signature: its config.toml's ``inputs``/``outputs``
give it), and each copy is checked against the digest taken when the repository was
read, so the digests in config.toml are those of the bytes in the context.

The repository's digest (:func:`repository_digest`) stands for the model's sha256 in the
image tag and the ``app.kubernetes.io/version`` label: it changes with any model file
or config.toml.

>>> repository_digest({"repository/m/1/model.pt": "ab" * 32})[:12]
'df423505f875'
"""
import dataclasses
import hashlib
import sys
from dataclasses import dataclass

from ..repository import CONFIG_NAME, RepositoryError, scan_repository
from ..signature import signature_from_options
from .model_file import MODEL_FILENAMES, inspect_model, sample_request_file, with_signature

COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class DeployedModel:
    """One model of the repository as deployed: its config (sha256 filled in) and the
    :class:`~berth.deployment.model_file.ModelFile` of each version copied."""
    name: str
    config: object          # berth.repository.ModelConfig
    versions: dict          # {version int: ModelFile}
    directory: object = None  # the model's directory in the repository (a Path)

    def signature(self):
        """berth.json of the highest version: the file's own, else the config's, or None."""
        model = self.versions[max(self.versions)]
        if model.signature is not None:
            return model.signature
        if self.config.inputs:
            return signature_from_options(list(self.config.inputs), list(self.config.outputs))
        return None

    def formats(self):
        return {model.format for model in self.versions.values()}


def read_repository(path, argument="model_path"):
    """[DeployedModel] for every model of the repository at ``path``, by name.

    Raises ValueError (RepositoryError) naming every model that cannot be served, and
    for an empty repository; nothing is written before this returns.
    """
    models = scan_repository(path)
    broken = [f"{name}: {source.error}" for name, source in models.items() if source.error]
    if broken:
        raise RepositoryError(f"{argument}: expected every model of repository {str(path)!r} to be "
                              f"servable, got {len(broken)} that cannot be: " + "; ".join(broken))
    if not models:
        raise RepositoryError(f"{argument}: expected a repository with at least one model "
                              f"(REPO/<model>/<version>/model.pt), got none in {str(path)!r}")
    return [_deployed(source) for source in models.values()]


def _deployed(source):
    config = source.config
    versions = {}
    for version in source.selected():
        path = source.versions[version]
        model = inspect_model(path, f"{source.name} version {version}")
        pinned = config.sha256.get(version)
        if pinned is not None and pinned != model.sha256:
            raise RepositoryError(
                f"{source.directory / CONFIG_NAME}: sha256: \"{version}\": expected the digest of "
                f"{str(path)!r}, {model.sha256}, got {pinned}: the file or its pinned digest is wrong")
        if config.inputs and (model.signature is not None or model.format == "pt2"):
            what = "a .pt2 package" if model.format == "pt2" else "a file that carries its own berth.json"
            raise RepositoryError(
                f"{source.directory / CONFIG_NAME}: inputs: expected no inputs/outputs for "
                f"{str(path)!r}, which is {what}; the server refuses a second signature: remove "
                "inputs and outputs from config.toml")
        versions[version] = model
    sha256 = {version: model.sha256 for version, model in versions.items()}
    return DeployedModel(source.name, dataclasses.replace(config, sha256=sha256), versions, source.directory)


def check_signatures(models, libraries=()):
    """Load each plain TorchScript version with its config.toml signature through berth's
    C core, so that inputs that do not fit forward fail here, not when the pod starts."""
    from .load_check import check_loads
    for deployed in models:
        if not deployed.config.inputs:
            for version, model in deployed.versions.items():
                if model.signature is None:
                    print(f"berth deploy: {deployed.name} version {version} ({model.path}) is a "
                          "plain TorchScript file and its config.toml gives no inputs: the server "
                          "will neither batch nor warm it up; add inputs = [\"NAME:DATATYPE:SHAPE\", "
                          "...] to its config.toml", file=sys.stderr)
            continue
        signature = signature_from_options(list(deployed.config.inputs), list(deployed.config.outputs))
        config = str(deployed.directory / CONFIG_NAME)
        for model in deployed.versions.values():
            check_loads(with_signature(model, signature), libraries, source=config)


def _verified_copy(model):
    """A writer for writer.write_tree: copies the file, refusing bytes that differ from
    those whose digest config.toml records."""
    def write(target):
        digest = hashlib.sha256()
        with open(model.path, "rb") as source, open(target, "wb") as out:
            for block in iter(lambda: source.read(COPY_CHUNK), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != model.sha256:
            raise RuntimeError(f"model_path: expected {model.path!r} to stay unchanged while "
                               f"deploying (sha256 {model.sha256}), got different bytes while copying")
    return write


def model_files(models):
    """{context path: writer or bytes} for repository/ and the sample requests, and
    {context path: sha256} of repository/'s files (for :func:`repository_digest`)."""
    files, digests = {}, {}
    for deployed in models:
        base = f"repository/{deployed.name}"
        for version, model in deployed.versions.items():
            relative = f"{base}/{version}/{MODEL_FILENAMES[model.format]}"  # by content, as serve
            files[relative] = _verified_copy(model)
            digests[relative] = model.sha256
        config = deployed.config.to_toml().encode()
        files[f"{base}/config.toml"] = config
        digests[f"{base}/config.toml"] = hashlib.sha256(config).hexdigest()
    return files, digests


def sample_files(models):
    """{model name: (file name, bytes, header length)}: one sample request per model with
    a signature, for its highest version: ``sample-request.<model>.json`` (or ``.bin``)."""
    samples = {}
    for deployed in models:
        signature = deployed.signature()
        if signature is not None:
            filename, data, header = sample_request_file(signature)
            stem, _, suffix = filename.rpartition(".")
            samples[deployed.name] = (f"{stem}.{deployed.name}.{suffix}", data, header)
    return samples


def repository_digest(digests):
    """sha256 over ``{context path: sha256}``, sorted: the repository's identity."""
    listing = "".join(f"{path}\0{digests[path]}\n" for path in sorted(digests))
    return hashlib.sha256(listing.encode()).hexdigest()


def digest_of(models):
    """The repository digest of what ``models`` put into the context."""
    return repository_digest(model_files(models)[1])


def describe(models):
    """``'fraud:1,2 resnet:3'``: the models and versions, for labels and comments."""
    return " ".join(f"{m.name}:{','.join(map(str, sorted(m.versions)))}" for m in models)
