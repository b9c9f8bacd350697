"""A model repository: many models and versions served by one ``berth serve REPO/``.

The layout, Triton's::

    REPO/
      fraud/
        config.toml          optional: signature, batching, versions to serve, sha256
        1/model.pt           TorchScript
        2/model.pt
      resnet/
        3/model.pt2          torch.export / AOTInductor package

A model is a directory whose name is 1 to 200 characters of ``A-Z a-z 0-9 . _ -``, not
starting with ``.`` (the name in URLs: ``/v2/models/fraud/versions/2/infer``). A version
is a directory named by a positive integer, written without leading zeros and at most
2**63-1, holding exactly one of ``model.pt`` and ``model.pt2``. Entries that are not
directories (``README.md``) and hidden entries (``.git``) are ignored, in the repository
and in a model directory; any other directory in a model directory (``v2``, ``01``) is
a mistake and keeps that model from being served. A model directory, version directory
or model file may be a symlink to a place inside the repository, never outside it.

``berth serve a.pt b.pt2`` is shorthand for a repository of two models named ``a`` and
``b``, each with version 1 (:func:`single_files`).

``config.toml`` (every key optional; a key left out takes the server's flag or default)::

    inputs = ["image:FP32:-1,3,224,224"]   # NAME:DATATYPE:SHAPE, as serve --input
    outputs = ["logits:FP32:-1,1000"]      # as serve --output (needs inputs)
    max_batch_size = 32                     # integer >= 1
    max_delay_ms = 2.0                      # number >= 0
    max_queue = 1024                        # integer >= 1
    batching = true                         # false: one request per forward
    warmup = true                           # false: no warm-up before readiness
    batch_tuning = true                     # false: fill batches up to max_batch_size
    workers = 1                             # concurrent forwards of this model, >= 1
    optimize = true                         # false: served as saved (serve --no-optimize)

    [version_policy]                        # exactly one of:
    latest = 2                              #   the 2 highest versions (default: latest = 1)
    # all = true                            #   every version
    # specific = [1, 3]                     #   these versions (each must exist)

    [sha256]                                # checked by the server before loading
    "1" = "<64 lowercase hex digits of REPO/resnet/1/model.pt2>"

Unknown keys, wrong types and out-of-range values are refused, naming the file and the
key; upper limits (the largest ``max_batch_size``, say) are the server's to check.

>>> config = parse_config('max_batch_size = 32\\n[version_policy]\\nlatest = 2\\n', "fraud/config.toml")
>>> config.max_batch_size, config.version_policy.describe()
(32, 'latest 2')
>>> config.version_policy.select([1, 2, 3])
[2, 3]
>>> print(config.to_toml(), end="")
max_batch_size = 32
<BLANKLINE>
[version_policy]
latest = 2
>>> parse_config("max_batch_size = 0", "fraud/config.toml")
Traceback (most recent call last):
...
berth.repository.RepositoryError: fraud/config.toml: max_batch_size: expected an integer >= 1, got 0

Reading the repository never imports torch or berth's C core (:func:`scan_repository`);
a broken model is reported in its :attr:`ModelSource.error` and never stops the scan.
"""
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

from .signature import signature_from_options

CONFIG_NAME = "config.toml"
MODEL_FILES = ("model.pt", "model.pt2")   # a version directory holds exactly one of them
MAX_NAME_LENGTH = 200
MAX_VERSION = 2 ** 63 - 1
POLICY_KINDS = ("latest", "all", "specific")

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
_VERSION = re.compile(r"[1-9][0-9]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class RepositoryError(ValueError):
    """A repository, model directory or config.toml that cannot be served as it is."""


def _kind(value):
    return f"{type(value).__name__} {value!r}"


def parse_version(text, where="version"):
    """The version a directory name (or a ``[sha256]`` key) stands for.

    >>> parse_version("12")
    12
    >>> parse_version("012")
    Traceback (most recent call last):
    ...
    berth.repository.RepositoryError: version: expected a positive integer without leading zeros, at most 9223372036854775807, got '012'
    """
    if not isinstance(text, str) or not _VERSION.match(text) or int(text) > MAX_VERSION:
        raise RepositoryError(f"{where}: expected a positive integer without leading zeros, "
                              f"at most {MAX_VERSION}, got {text!r}")
    return int(text)


def _check_version_number(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise RepositoryError(f"{where}: expected a version, an integer between 1 and "
                              f"{MAX_VERSION}, got {_kind(value)}")
    return value


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve, as Triton's ``version_policy``.

    ``latest``: the ``count`` highest versions; ``all``: every version; ``specific``:
    the versions listed (ascending).

    >>> VersionPolicy().select([3, 1, 2]), VersionPolicy("all").select([3, 1, 2])
    ([3], [1, 2, 3])
    >>> VersionPolicy("specific", versions=(3, 1)).describe()
    'specific [1, 3]'
    """
    kind: str = "latest"
    count: int = 1
    versions: tuple = ()

    def __post_init__(self):
        if self.kind not in POLICY_KINDS:
            raise RepositoryError(f"version_policy: expected one of {', '.join(POLICY_KINDS)}, "
                                  f"got {self.kind!r}")
        if self.kind == "latest":
            if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
                raise RepositoryError(f"version_policy: latest: expected an integer >= 1, "
                                      f"got {_kind(self.count)}")
        if isinstance(self.versions, (str, bytes)) or not hasattr(self.versions, "__iter__"):
            raise RepositoryError(f"version_policy: specific: expected a list of versions, "
                                  f"got {_kind(self.versions)}")
        versions = tuple(self.versions)
        for value in versions:
            _check_version_number(value, "version_policy: specific")
        if len(set(versions)) != len(versions):
            raise RepositoryError(f"version_policy: specific: expected distinct versions, "
                                  f"got {list(versions)}")
        if self.kind == "specific" and not versions:
            raise RepositoryError("version_policy: specific: expected at least one version, got []")
        if self.kind != "specific" and versions:
            raise RepositoryError(f"version_policy: versions are for 'specific', got kind "
                                  f"{self.kind!r} with {list(versions)}")
        object.__setattr__(self, "versions", tuple(sorted(versions)))

    def select(self, available):
        """The versions to serve among ``available`` (ints), ascending."""
        have = sorted(set(available))
        if self.kind == "all":
            return have
        if self.kind == "latest":
            return have[-self.count:]
        return [v for v in self.versions if v in have]

    def describe(self):
        """``'latest 1'``, ``'all'`` or ``'specific [1, 3]'``."""
        if self.kind == "latest":
            return f"latest {self.count}"
        if self.kind == "all":
            return "all"
        return f"specific {list(self.versions)}"


def _check_int(value, key, where, low):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RepositoryError(f"{where}: {key}: expected an integer >= {low}, got {_kind(value)}")
    if value < low:
        raise RepositoryError(f"{where}: {key}: expected an integer >= {low}, got {value}")
    return value


def _check_delay(value, where):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RepositoryError(f"{where}: max_delay_ms: expected a number >= 0, got {_kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise RepositoryError(f"{where}: max_delay_ms: expected a finite number >= 0, got {value}")
    return float(value)


def _check_strings(value, key, where):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(s, str) for s in value):
        raise RepositoryError(f"{where}: {key}: expected a list of 'NAME:DATATYPE:SHAPE' "
                              f"strings, got {_kind(value)}")
    return tuple(value)


def _check_signature(inputs, outputs, where):
    if outputs and not inputs:
        raise RepositoryError(f"{where}: outputs: expected inputs too (a signature lists "
                              f"inputs), got outputs {list(outputs)} without inputs")
    if inputs:
        try:
            signature_from_options(list(inputs), list(outputs))
        except ValueError as exc:
            key = "outputs" if "--output" in str(exc) else "inputs"
            text = str(exc).replace("--input: ", "").replace("--output: ", "")
            raise RepositoryError(f"{where}: {key}: {text}") from None


def _check_sha256(table, where):
    if not isinstance(table, dict):
        raise RepositoryError(f"{where}: sha256: expected a table of version = hex digest, "
                              f"got {_kind(table)}")
    out = {}
    for version, digest in table.items():
        if isinstance(version, str):
            version = parse_version(version, f"{where}: sha256: key")
        else:
            _check_version_number(version, f"{where}: sha256: key")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise RepositoryError(f"{where}: sha256: \"{version}\": expected 64 lowercase hex "
                                  f"digits, got {_kind(digest)}")
        out[version] = digest
    return dict(sorted(out.items()))


def _checked_fields(values, where):
    """The fields of a ModelConfig, checked and normalized (tuples, floats, sorted dicts)."""
    v = dict(values)
    v["inputs"] = _check_strings(v["inputs"], "inputs", where)
    v["outputs"] = _check_strings(v["outputs"], "outputs", where)
    _check_signature(v["inputs"], v["outputs"], where)
    for key, low in (("max_batch_size", 1), ("max_queue", 1), ("workers", 1)):
        _check_int(v[key], key, where, low)
    v["max_delay_ms"] = _check_delay(v["max_delay_ms"], where)
    for key in ("batching", "warmup", "batch_tuning", "optimize"):
        if not isinstance(v[key], bool):
            raise RepositoryError(f"{where}: {key}: expected true or false, got {_kind(v[key])}")
    if not isinstance(v["version_policy"], VersionPolicy):
        raise RepositoryError(f"{where}: version_policy: expected a VersionPolicy, "
                              f"got {_kind(v['version_policy'])}")
    v["sha256"] = _check_sha256(v["sha256"], where)
    return v


def _toml_string(text):
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


@dataclass(frozen=True)
class ModelConfig:
    """One model's ``config.toml``. ``None``: the server's flag or default.

    >>> ModelConfig(inputs=("x:FP32:-1,10",), workers=2).to_toml()
    'inputs = ["x:FP32:-1,10"]\\nworkers = 2\\n'
    """
    inputs: tuple = ()
    outputs: tuple = ()
    max_batch_size: "int | None" = None
    max_delay_ms: "float | None" = None
    max_queue: "int | None" = None
    batching: bool = True
    warmup: bool = True
    batch_tuning: bool = True
    workers: "int | None" = None
    optimize: bool = True
    version_policy: VersionPolicy = VersionPolicy()
    sha256: dict = field(default_factory=dict)   # {version int: lowercase hex}

    def __post_init__(self):
        checked = _checked_fields({f.name: getattr(self, f.name) for f in fields(self)}, "ModelConfig")
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    def to_toml(self):
        """config.toml text with only the keys that differ from the defaults."""
        default = ModelConfig()
        lines = [f"{f.name} = {_toml_value(getattr(self, f.name))}" for f in fields(self)
                 if f.name not in ("version_policy", "sha256")
                 and getattr(self, f.name) != getattr(default, f.name)]
        policy = self.version_policy
        if policy != default.version_policy:
            value = {"latest": policy.count, "all": True, "specific": list(policy.versions)}
            lines += ["", "[version_policy]", f"{policy.kind} = {_toml_value(value[policy.kind])}"]
        if self.sha256:
            lines += ["", "[sha256]"] + [f'"{v}" = "{d}"' for v, d in sorted(self.sha256.items())]
        if lines and lines[0] == "":
            lines = lines[1:]
        return "".join(line + "\n" for line in lines)


_SCALAR_KEYS = ("inputs", "outputs", "max_batch_size", "max_delay_ms", "max_queue", "batching",
                "warmup", "batch_tuning", "workers", "optimize")
_TABLE_KEYS = ("version_policy", "sha256")


def _policy_from_table(table, where):
    if not isinstance(table, dict):
        raise RepositoryError(f"{where}: version_policy: expected a table with one of latest, "
                              f"all, specific, got {_kind(table)}")
    unknown = sorted(set(table) - set(POLICY_KINDS))
    if unknown:
        raise RepositoryError(f"{where}: version_policy: expected one of latest, all, specific, "
                              f"got unknown key {unknown[0]!r}")
    if len(table) != 1:
        raise RepositoryError(f"{where}: version_policy: expected exactly one of latest, all, "
                              f"specific, got {len(table)} ({', '.join(sorted(table)) or 'none'})")
    (kind, value), = table.items()
    if kind == "all" and value is not True:
        raise RepositoryError(f"{where}: version_policy: all: expected true, got {_kind(value)}")
    if kind == "specific" and not isinstance(value, list):
        raise RepositoryError(f"{where}: version_policy: specific: expected a list of versions "
                              f"such as [1, 3], got {_kind(value)}")
    try:
        if kind == "latest":
            return VersionPolicy("latest", count=value)
        if kind == "all":
            return VersionPolicy("all")
        return VersionPolicy("specific", versions=tuple(value))
    except RepositoryError as exc:
        raise RepositoryError(f"{where}: {exc}") from None


def parse_config(text, where):
    """A :class:`ModelConfig` from config.toml text; ``where`` names the file in errors.

    >>> parse_config('workers = 2\\nwarmups = false', "m/config.toml")
    Traceback (most recent call last):
    ...
    berth.repository.RepositoryError: m/config.toml: unknown key 'warmups'; expected keys: inputs, outputs, max_batch_size, max_delay_ms, max_queue, batching, warmup, batch_tuning, workers, optimize, [version_policy], [sha256]
    """
    if tomllib is None:
        raise RepositoryError(f"{where}: reading config.toml needs Python 3.11 or newer "
                              "(tomllib); this is an older Python")
    if not isinstance(text, str):
        raise RepositoryError(f"{where}: expected TOML text (str), got {type(text).__name__}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RepositoryError(f"{where}: expected TOML, got a syntax error: {exc}") from None
    known = _SCALAR_KEYS + _TABLE_KEYS
    for key in table:
        if key not in known:
            raise RepositoryError(
                f"{where}: unknown key {key!r}; expected keys: {', '.join(_SCALAR_KEYS)}, "
                + ", ".join(f"[{k}]" for k in _TABLE_KEYS))
    default = ModelConfig()
    values = {f.name: getattr(default, f.name) for f in fields(ModelConfig)}
    values.update({k: table[k] for k in _SCALAR_KEYS if k in table})
    if "version_policy" in table:
        values["version_policy"] = _policy_from_table(table["version_policy"], where)
    if "sha256" in table:
        values["sha256"] = table["sha256"]
    return ModelConfig(**_checked_fields(values, where))


def load_config(path):
    """The :class:`ModelConfig` in file ``path``; ``ModelConfig()`` when there is none."""
    path = Path(path)
    if not os.path.lexists(path):
        return ModelConfig()
    if not path.is_file():
        raise RepositoryError(f"{path}: expected a {CONFIG_NAME} file, got "
                              f"{'a directory' if path.is_dir() else 'something else'}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RepositoryError(f"{path}: expected UTF-8 text, got {exc.reason} at byte "
                              f"{exc.start}") from None
    except OSError as exc:
        raise RepositoryError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_config(text, str(path))


@dataclass(frozen=True)
class ModelSource:
    """One model of a repository: its versions' files, its config, or why it cannot be
    served (``error``; ``versions`` then lists the good versions found, if any)."""
    name: str
    versions: dict                 # {version int: resolved Path of model.pt or model.pt2}
    config: ModelConfig
    directory: "Path | None"       # None for the file shorthand
    error: "str | None" = None

    def selected(self):
        """The versions the config's version policy serves, ascending."""
        return self.config.version_policy.select(self.versions)


def check_model_name(name, where="model name"):
    """``name`` if it can be a model's name in URLs, else RepositoryError.

    >>> check_model_name("fraud-v2.1")
    'fraud-v2.1'
    >>> check_model_name("a/b")
    Traceback (most recent call last):
    ...
    berth.repository.RepositoryError: model name: expected 1 to 200 characters of A-Z a-z 0-9 . _ - not starting with '.', got 'a/b' ('/' is not allowed)
    """
    expected = f"{where}: expected 1 to {MAX_NAME_LENGTH} characters of A-Z a-z 0-9 . _ - not starting with '.'"
    if not isinstance(name, str):
        raise RepositoryError(f"{expected}, got {_kind(name)}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise RepositoryError(f"{expected}, got {len(name)} characters: {name[:40]!r}"
                              + ("..." if len(name) > 40 else ""))
    if not _NAME.match(name):
        bad = next((ch for ch in name if not re.match(r"[A-Za-z0-9._-]", ch)), None)
        why = f"{bad!r} is not allowed" if bad is not None else "it starts with '.'"
        raise RepositoryError(f"{expected}, got {name!r} ({why})")
    return name


def _inside(path, root):
    """Whether ``path``, symlinks resolved, is within ``root`` (already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _outside_problem(path, what, root):
    if path.is_symlink() and not _inside(path, root):
        return (f"{path}: {what} is a symlink to {os.path.realpath(path)}, outside the "
                f"repository {root}")
    return None


def _scan_version(path, root):
    """(resolved model file, None) or (None, why not)."""
    found = [name for name in MODEL_FILES if os.path.lexists(path / name)]
    if len(found) != 1:
        got = "both" if found else "neither"
        return None, f"{path}: expected exactly one of {' or '.join(MODEL_FILES)}, got {got}"
    model = path / found[0]
    problem = _outside_problem(model, "the model file", root)
    if problem:
        return None, problem
    if not model.is_file():
        what = "a directory" if model.is_dir() else "a broken symlink" if model.is_symlink() else "not a file"
        return None, f"{model}: expected a model file, got {what}"
    return model.resolve(), None


def _scan_model(name, directory, root):
    problems = []
    try:
        config = load_config(directory / CONFIG_NAME)
        problem = _outside_problem(directory / CONFIG_NAME, CONFIG_NAME, root)
        if problem:
            problems.append(problem)
    except RepositoryError as exc:
        config, problems = ModelConfig(), [str(exc)]
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        return ModelSource(name, {}, config, directory,
                           f"{directory}: cannot be read: {exc.strerror or exc}")
    versions = {}
    for entry in entries:
        path = directory / entry
        if entry.startswith(".") or entry == CONFIG_NAME or not path.is_dir():
            continue
        try:
            version = parse_version(entry, f"{path}: version directory")
        except RepositoryError as exc:
            problems.append(str(exc))
            continue
        problem = _outside_problem(path, "the version directory", root)
        model, problem = (None, problem) if problem else _scan_version(path, root)
        if problem:
            problems.append(problem)
        else:
            versions[version] = model
    if not versions and not problems:
        problems.append(f"{directory}: expected at least one version directory such as "
                        f"{directory / '1' / MODEL_FILES[0]}, got none")
    policy = config.version_policy
    missing = [v for v in policy.versions if v not in versions]
    if versions and missing:
        problems.append(f"{directory}: version_policy {policy.describe()}: expected every version "
                        f"listed to be there, got no version {', '.join(map(str, missing))} "
                        f"(found {sorted(versions)})")
    return ModelSource(name, dict(sorted(versions.items())), config, directory,
                       "; ".join(problems) or None)


def scan_repository(root):
    """{name: :class:`ModelSource`} of every model directory in ``root``, by name.

    Only an unusable ``root`` raises RepositoryError; a broken model is a ModelSource
    whose ``error`` says why, so a rescan while serving keeps the other models.

    >>> import tempfile
    >>> repo = Path(tempfile.mkdtemp())
    >>> (repo / "fraud" / "1").mkdir(parents=True)
    >>> _ = (repo / "fraud" / "1" / "model.pt").write_bytes(b"...")
    >>> (repo / "fraud" / "v2").mkdir()
    >>> source = scan_repository(repo)["fraud"]
    >>> sorted(source.versions), source.error.endswith("version directory: expected a positive integer "
    ...                                                  "without leading zeros, at most 9223372036854775807, got 'v2'")
    ([1], True)
    """
    given = root
    root = Path(root)
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise RepositoryError(f"repository: expected a directory of models, got {str(given)!r} "
                              f"({what} is there)")
    resolved = root.resolve()
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise RepositoryError(f"repository: expected a readable directory, got {str(given)!r} "
                              f"({exc.strerror or exc})") from None
    models = {}
    for entry in entries:
        directory = root / entry
        if entry.startswith(".") or not directory.is_dir():
            continue
        try:
            check_model_name(entry, f"{directory}: model directory name")
        except RepositoryError as exc:
            models[entry] = ModelSource(entry, {}, ModelConfig(), directory, str(exc))
            continue
        problem = _outside_problem(directory, "the model directory", resolved)
        models[entry] = (ModelSource(entry, {}, ModelConfig(), directory, problem) if problem
                         else _scan_model(entry, directory, resolved))
    return models


def single_files(paths):
    """The ``serve a.pt b.pt2`` shorthand: {name: ModelSource} with version 1 each, named
    after the files (base name without extension), sorted by name.

    >>> single_files(["/nonexistent/a.pt"])
    Traceback (most recent call last):
    ...
    berth.repository.RepositoryError: model: expected a model file, got '/nonexistent/a.pt' (nothing is there)
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    models, origin = {}, {}
    for given in paths:
        path = Path(given)
        if not path.is_file():
            what = ("a directory (serve a repository alone: berth serve REPO/)" if path.is_dir()
                    else "nothing is there" if not os.path.lexists(path) else "not a file")
            raise RepositoryError(f"model: expected a model file, got {str(given)!r} ({what})")
        name = os.path.splitext(os.path.basename(path))[0] or "model"
        check_model_name(name, f"model: the name from {str(given)!r}")
        if name in models:
            raise RepositoryError(f"model: expected files with distinct names, got "
                                  f"{str(origin[name])!r} and {str(given)!r}, both named {name!r}")
        origin[name] = given
        models[name] = ModelSource(name, {1: path.resolve()}, ModelConfig(), None)
    return dict(sorted(models.items()))


def is_repository(paths):
    """True when ``paths`` is one path to a directory (``berth serve REPO/``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    return len(paths) == 1 and Path(paths[0]).is_dir()
