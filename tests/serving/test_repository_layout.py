"""berth.repository: the model repository's layout, config.toml and their refusals, on
real directories and real symlinks (no model is loaded: the files' bytes do not matter)."""
import os
from pathlib import Path

import pytest

from berth.repository import (CONFIG_NAME, MODEL_FILES, ModelConfig, ModelSource,
                              RepositoryError, VersionPolicy, check_model_name, is_repository,
                              load_config, parse_config, scan_repository, single_files)

SHA = "0123456789abcdef" * 4


def _model(root, name, *versions, filename="model.pt", config=None):
    """Make root/name/<v>/filename for each version (and config.toml); the model dir."""
    directory = Path(root) / name
    directory.mkdir(parents=True, exist_ok=True)
    for version in versions:
        (directory / str(version)).mkdir()
        (directory / str(version) / filename).write_bytes(b"model bytes")
    if config is not None:
        (directory / CONFIG_NAME).write_text(config)
    return directory


# ---- config.toml ----

FULL = """\
inputs = ["image:FP32:-1,3,224,224"]
outputs = ["logits:FP32:-1,1000"]
max_batch_size = 32
max_delay_ms = 2.5
max_queue = 100
batching = false
warmup = false
batch_tuning = false
workers = 2
optimize = false

[version_policy]
specific = [3, 1]

[sha256]
"1" = "%s"
"3" = "%s"
""" % (SHA, SHA)


def test_every_key_parses_and_round_trips():
    config = parse_config(FULL, "m/config.toml")
    assert config == ModelConfig(
        inputs=("image:FP32:-1,3,224,224",), outputs=("logits:FP32:-1,1000",), max_batch_size=32,
        max_delay_ms=2.5, max_queue=100, batching=False, warmup=False, batch_tuning=False,
        workers=2, optimize=False, version_policy=VersionPolicy("specific", versions=(1, 3)),
        sha256={1: SHA, 3: SHA})
    assert parse_config(config.to_toml(), "again") == config
    assert config.to_toml().startswith('inputs = ["image:FP32:-1,3,224,224"]\n')
    assert "[version_policy]\nspecific = [1, 3]\n" in config.to_toml()


@pytest.mark.parametrize("config", [
    ModelConfig(), ModelConfig(max_delay_ms=0), ModelConfig(max_delay_ms=1e-5),
    ModelConfig(version_policy=VersionPolicy("all")),
    ModelConfig(version_policy=VersionPolicy("latest", count=3)),
    ModelConfig(inputs=('we"ird\\name\t:FP32:-1',)),
    ModelConfig(inputs=("é:FP32:-1", "x:INT64:-1,4"), sha256={12: SHA})])
def test_to_toml_writes_only_what_differs_and_reads_back(config):
    text = config.to_toml()
    assert parse_config(text, "x") == config
    if config == ModelConfig():
        assert text == ""


def test_an_empty_or_missing_config_is_the_default(tmp_path):
    assert parse_config("", "x") == ModelConfig()
    assert load_config(tmp_path / "absent.toml") == ModelConfig()
    (tmp_path / "c.toml").write_text("workers = 3\n")
    assert load_config(tmp_path / "c.toml").workers == 3


def test_integer_delay_becomes_a_float():
    config = parse_config("max_delay_ms = 2", "x")
    assert config.max_delay_ms == 2.0 and isinstance(config.max_delay_ms, float)


@pytest.mark.parametrize("text, expected", [
    ("colour = 1", "m.toml: unknown key 'colour'; expected keys: inputs, outputs,"),
    ("max_batch_size = 0", "m.toml: max_batch_size: expected an integer >= 1, got 0"),
    ("max_batch_size = true", "m.toml: max_batch_size: expected an integer >= 1, got bool True"),
    ("max_batch_size = 2.0", "m.toml: max_batch_size: expected an integer >= 1, got float 2.0"),
    ("max_queue = -1", "m.toml: max_queue: expected an integer >= 1, got -1"),
    ("workers = \"2\"", "m.toml: workers: expected an integer >= 1, got str '2'"),
    ("max_delay_ms = -1.0", "m.toml: max_delay_ms: expected a finite number >= 0, got -1.0"),
    ("max_delay_ms = nan", "m.toml: max_delay_ms: expected a finite number >= 0, got nan"),
    ("max_delay_ms = inf", "m.toml: max_delay_ms: expected a finite number >= 0, got inf"),
    ("max_delay_ms = \"2\"", "m.toml: max_delay_ms: expected a number >= 0, got str '2'"),
    ("batching = 1", "m.toml: batching: expected true or false, got int 1"),
    ("optimize = \"no\"", "m.toml: optimize: expected true or false, got str 'no'"),
    ("inputs = \"x:FP32:-1\"", "m.toml: inputs: expected a list of 'NAME:DATATYPE:SHAPE' strings, got str"),
    ("inputs = [1]", "m.toml: inputs: expected a list of 'NAME:DATATYPE:SHAPE' strings, got list [1]"),
    ("inputs = [\"x:FP33:-1\"]", "m.toml: inputs: expected a DATATYPE among"),
    ("inputs = [\"x:FP32\"]", "m.toml: inputs: expected NAME:DATATYPE:SHAPE such as 'x:FP32:-1,10', got 'x:FP32'"),
    ("inputs = [\"x:FP32:-1\"]\noutputs = [\"y:FP32:a\"]", "m.toml: outputs: expected SHAPE as comma-separated"),
    ("inputs = []\noutputs = [\"y:FP32:-1\"]", "m.toml: outputs: expected inputs too"),
    ("version_policy = 1", "m.toml: version_policy: expected a table with one of latest, all, specific, got int 1"),
    ("[version_policy]", "m.toml: version_policy: expected exactly one of latest, all, specific, got 0 (none)"),
    ("[version_policy]\nlatest = 1\nall = true",
     "m.toml: version_policy: expected exactly one of latest, all, specific, got 2 (all, latest)"),
    ("[version_policy]\nnewest = 1", "m.toml: version_policy: expected one of latest, all, specific, got unknown key 'newest'"),
    ("[version_policy]\nlatest = 0", "m.toml: version_policy: latest: expected an integer >= 1, got int 0"),
    ("[version_policy]\nall = false", "m.toml: version_policy: all: expected true, got bool False"),
    ("[version_policy]\nspecific = 3", "m.toml: version_policy: specific: expected a list of versions such as [1, 3], got int 3"),
    ("[version_policy]\nspecific = []", "m.toml: version_policy: specific: expected at least one version, got []"),
    ("[version_policy]\nspecific = [1, 1]", "m.toml: version_policy: specific: expected distinct versions, got [1, 1]"),
    ("[version_policy]\nspecific = [0]", "m.toml: version_policy: specific: expected a version, an integer between 1 and"),
    ("[sha256]\n\"01\" = \"%s\"" % SHA, "m.toml: sha256: key: expected a positive integer without leading zeros"),
    ("[sha256]\n\"one\" = \"%s\"" % SHA, "got 'one'"),
    ("[sha256]\n\"1\" = \"%s\"" % SHA.upper(), "m.toml: sha256: \"1\": expected 64 lowercase hex digits, got str '0123"),
    ("[sha256]\n\"1\" = \"abc\"", "m.toml: sha256: \"1\": expected 64 lowercase hex digits, got str 'abc'"),
    ("sha256 = \"x\"", "m.toml: sha256: expected a table of version = hex digest, got str 'x'"),
    ("max_batch_size = ", "m.toml: expected TOML, got a syntax error: "),
])
def test_bad_config_is_refused_naming_file_key_expected_and_received(text, expected):
    with pytest.raises(RepositoryError) as info:
        parse_config(text, "m.toml")
    assert expected in str(info.value), str(info.value)


def test_a_config_that_is_not_utf8_or_not_a_file_is_refused(tmp_path):
    (tmp_path / "bad.toml").write_bytes(b"workers = 1\n# \xff\n")
    with pytest.raises(RepositoryError, match=r"bad.toml: expected UTF-8 text, got invalid start byte at byte 14"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(RepositoryError, match="dir.toml: expected a config.toml file, got a directory"):
        load_config(tmp_path / "dir.toml")


def test_model_config_checks_values_given_in_code_too():
    with pytest.raises(RepositoryError, match="ModelConfig: workers: expected an integer >= 1, got 0"):
        ModelConfig(workers=0)
    with pytest.raises(RepositoryError, match="version_policy: expected one of latest, all, specific, got 'newest'"):
        VersionPolicy("newest")
    with pytest.raises(RepositoryError, match="versions are for 'specific', got kind 'all'"):
        VersionPolicy("all", versions=(1,))
    assert ModelConfig(inputs=["x:FP32:-1"]).inputs == ("x:FP32:-1",)


# ---- version policies ----

def test_version_policies_select_as_triton_does():
    available = {3: "c", 1: "a", 7: "g"}
    assert VersionPolicy().select(available) == [7]
    assert VersionPolicy("latest", count=2).select(available) == [3, 7]
    assert VersionPolicy("latest", count=9).select(available) == [1, 3, 7]
    assert VersionPolicy("all").select(available) == [1, 3, 7]
    assert VersionPolicy("specific", versions=(7, 1)).select(available) == [1, 7]
    assert VersionPolicy("specific", versions=(2,)).select(available) == []
    assert VersionPolicy().select([]) == []
    assert [VersionPolicy().describe(), VersionPolicy("all").describe(),
            VersionPolicy("specific", versions=(3, 1)).describe()] == ["latest 1", "all", "specific [1, 3]"]


# ---- model names ----

@pytest.mark.parametrize("name", ["a", "fraud", "Fraud_v2.1-x", "0", "a" * 200, "stats", "a..b"])
def test_good_model_names(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "got 0 characters"), ("a" * 201, "got 201 characters"), (".", "starts with '.'"),
    ("..", "starts with '.'"), (".hidden", "starts with '.'"), ("a/b", "'/' is not allowed"),
    ("/abs", "'/' is not allowed"), ("a b", "' ' is not allowed"), ("a%2e", "'%' is not allowed"),
    ("a:b", "':' is not allowed"), ("a?b", "'?' is not allowed"), ("a#b", "'#' is not allowed"),
    ('a"b', "'\"' is not allowed"), ("a'b", "\"'\" is not allowed"), ("a\\b", "'\\\\' is not allowed"),
    ("a\x00b", "'\\x00' is not allowed"), ("a\nb", "'\\n' is not allowed"),
    ("a\x7fb", "'\\x7f' is not allowed"), ("modèle", "'è' is not allowed"),
    ("a\u200bb", "'\\u200b' is not allowed"), (None, "got NoneType None"),
])
def test_bad_model_names_are_refused_saying_why(name, why):
    with pytest.raises(RepositoryError) as info:
        check_model_name(name, "--name")
    message = str(info.value)
    assert message.startswith("--name: expected 1 to 200 characters of A-Z a-z 0-9 . _ - not starting with '.', got")
    assert why in message, message


# ---- scanning ----

def test_a_repository_of_two_models(tmp_path):
    _model(tmp_path, "fraud", 1, 2, config="workers = 2\n[version_policy]\nall = true\n")
    _model(tmp_path, "resnet", 3, filename="model.pt2")
    (tmp_path / "README.md").write_text("not a model")
    (tmp_path / ".git").mkdir()
    (tmp_path / "fraud" / "notes.txt").write_text("a file in a model dir is ignored")
    (tmp_path / "fraud" / ".ipynb_checkpoints").mkdir()
    models = scan_repository(tmp_path)
    assert list(models) == ["fraud", "resnet"]
    fraud, resnet = models["fraud"], models["resnet"]
    assert fraud == ModelSource(
        "fraud", {1: (tmp_path / "fraud/1/model.pt").resolve(), 2: (tmp_path / "fraud/2/model.pt").resolve()},
        ModelConfig(workers=2, version_policy=VersionPolicy("all")), tmp_path / "fraud")
    assert fraud.selected() == [1, 2] and fraud.error is None
    assert resnet.versions == {3: (tmp_path / "resnet/3/model.pt2").resolve()}
    assert resnet.selected() == [3] and resnet.config == ModelConfig()
    assert is_repository([tmp_path]) and is_repository(str(tmp_path))
    assert not is_repository([tmp_path, tmp_path]) and not is_repository([tmp_path / "README.md"])


def test_models_are_sorted_and_versions_ascending(tmp_path):
    for name in ["zeta", "Alpha", "mid"]:
        _model(tmp_path, name, 10, 9, 100)
    models = scan_repository(tmp_path)
    assert list(models) == ["Alpha", "mid", "zeta"]
    assert list(models["mid"].versions) == [9, 10, 100] and models["mid"].selected() == [100]


@pytest.mark.parametrize("dirname, got", [
    ("0", "got '0'"), ("01", "got '01'"), ("-1", "got '-1'"), ("v2", "got 'v2'"), ("1.0", "got '1.0'"),
    (str(2 ** 63), f"got '{2 ** 63}'"), ("١", "got '١'"), ("1 ", "got '1 '")])
def test_bad_version_directories_are_reported_not_skipped(tmp_path, dirname, got):
    directory = _model(tmp_path, "m", 1)
    (directory / dirname).mkdir()
    source = scan_repository(tmp_path)["m"]
    assert source.versions == {1: (directory / "1/model.pt").resolve()}
    assert source.error == (f"{directory / dirname}: version directory: expected a positive integer "
                            f"without leading zeros, at most {2 ** 63 - 1}, {got}")


def test_the_largest_version_is_accepted(tmp_path):
    _model(tmp_path, "m", 2 ** 63 - 1, 1)
    assert scan_repository(tmp_path)["m"].selected() == [2 ** 63 - 1]


def test_a_version_needs_exactly_one_model_file(tmp_path):
    both = _model(tmp_path, "both", 1)
    (both / "1/model.pt2").write_bytes(b"x")
    neither = _model(tmp_path, "neither", 1)
    (neither / "1/model.pt").unlink()
    (neither / "1/weights.bin").write_bytes(b"x")
    dirfile = _model(tmp_path, "dirfile")
    (dirfile / "1/model.pt").mkdir(parents=True)
    models = scan_repository(tmp_path)
    assert models["both"].error == f"{both / '1'}: expected exactly one of model.pt or model.pt2, got both"
    assert models["neither"].error == f"{neither / '1'}: expected exactly one of model.pt or model.pt2, got neither"
    assert models["dirfile"].error == f"{dirfile / '1/model.pt'}: expected a model file, got a directory"
    assert all(models[m].versions == {} and models[m].selected() == [] for m in models)
    assert MODEL_FILES == ("model.pt", "model.pt2")


def test_a_model_without_versions_is_an_error(tmp_path):
    directory = _model(tmp_path, "empty", config="workers = 1\n")
    assert scan_repository(tmp_path)["empty"].error == (
        f"{directory}: expected at least one version directory such as {directory / '1/model.pt'}, got none")


def test_a_bad_config_is_the_model_error_and_the_others_still_scan(tmp_path):
    bad = _model(tmp_path, "bad", 1, config="max_batch_size = 0\n")
    _model(tmp_path, "good", 1)
    models = scan_repository(tmp_path)
    assert models["bad"].error == f"{bad / CONFIG_NAME}: max_batch_size: expected an integer >= 1, got 0"
    assert models["bad"].config == ModelConfig()
    assert models["good"].error is None


def test_a_specific_version_that_is_missing_is_an_error(tmp_path):
    directory = _model(tmp_path, "m", 1, 2, config="[version_policy]\nspecific = [2, 5]\n")
    source = scan_repository(tmp_path)["m"]
    assert source.error == (f"{directory}: version_policy specific [2, 5]: expected every version listed "
                            "to be there, got no version 5 (found [1, 2])")
    assert source.selected() == [2]


def test_several_problems_are_all_reported(tmp_path):
    directory = _model(tmp_path, "m", 1, config="workers = 0\n")
    (directory / "x").mkdir()
    error = scan_repository(tmp_path)["m"].error
    assert "workers: expected an integer >= 1, got 0" in error and "got 'x'" in error and "; " in error


def test_a_bad_model_directory_name_is_reported_as_found(tmp_path):
    _model(tmp_path, "with space", 1)
    _model(tmp_path, "ok", 1)
    models = scan_repository(tmp_path)
    assert models["with space"].error == (
        f"{tmp_path / 'with space'}: model directory name: expected 1 to 200 characters of "
        "A-Z a-z 0-9 . _ - not starting with '.', got 'with space' (' ' is not allowed)")
    assert models["with space"].versions == {} and models["ok"].error is None


def test_symlinks_inside_the_repository_are_followed(tmp_path):
    repo = tmp_path / "repo"
    real = _model(repo, "real", 1, 2)
    (repo / "alias").symlink_to(real, target_is_directory=True)            # model dir
    linked = _model(repo, "linked")
    (linked / "7").symlink_to(real / "2", target_is_directory=True)        # version dir
    (linked / "8").mkdir()
    (linked / "8/model.pt").symlink_to(real / "1/model.pt")                # model file
    models = scan_repository(repo)
    assert models["alias"].versions == models["real"].versions and models["alias"].error is None
    assert models["linked"].versions == {7: (real / "2/model.pt").resolve(), 8: (real / "1/model.pt").resolve()}
    assert models["linked"].error is None


def test_symlinks_leading_out_of_the_repository_are_refused(tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    elsewhere = _model(outside, "secret", 1)
    repo.mkdir()
    (repo / "escape").symlink_to(elsewhere, target_is_directory=True)
    version = _model(repo, "version")
    (version / "1").symlink_to(elsewhere / "1", target_is_directory=True)
    file = _model(repo, "file")
    (file / "1").mkdir()
    (file / "1/model.pt").symlink_to(elsewhere / "1/model.pt")
    config = _model(repo, "config", 1)
    (config / CONFIG_NAME).symlink_to(outside / "c.toml")
    (outside / "c.toml").write_text("workers = 1\n")
    models = scan_repository(repo)
    resolved_repo = repo.resolve()
    assert models["escape"].error == (f"{repo / 'escape'}: the model directory is a symlink to "
                                      f"{elsewhere.resolve()}, outside the repository {resolved_repo}")
    assert models["version"].error == (f"{version / '1'}: the version directory is a symlink to "
                                       f"{(elsewhere / '1').resolve()}, outside the repository {resolved_repo}")
    assert models["file"].error == (f"{file / '1/model.pt'}: the model file is a symlink to "
                                    f"{(elsewhere / '1/model.pt').resolve()}, outside the repository {resolved_repo}")
    assert models["config"].error == (f"{config / CONFIG_NAME}: config.toml is a symlink to "
                                      f"{(outside / 'c.toml').resolve()}, outside the repository {resolved_repo}")
    assert all(not models[m].versions for m in ("escape", "version", "file"))


def test_a_broken_model_file_symlink_is_an_error(tmp_path):
    directory = _model(tmp_path, "m")
    (directory / "1").mkdir()
    (directory / "1/model.pt").symlink_to(tmp_path / "m/1/gone.pt")
    assert scan_repository(tmp_path)["m"].error == f"{directory / '1/model.pt'}: expected a model file, got a broken symlink"


def test_a_repository_reached_through_a_symlink_is_its_target(tmp_path):
    _model(tmp_path / "real", "m", 1)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert scan_repository(tmp_path / "link")["m"].error is None


def test_an_unusable_root_raises(tmp_path):
    with pytest.raises(RepositoryError, match=r"repository: expected a directory of models, got '.*absent' \(nothing is there\)"):
        scan_repository(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError, match=r"repository: expected a directory of models, got '.*file' \(a file is there\)"):
        scan_repository(tmp_path / "file")


def test_unreadable_directories(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    locked = _model(repo, "locked", 1)
    _model(repo, "open", 1)
    real_listdir = os.listdir

    def listdir(path):  # chmod 000 does not stop root, who runs these tests in containers
        if Path(path) in locked_paths:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)
    locked_paths = {locked}
    monkeypatch.setattr("berth.repository.os.listdir", listdir)
    models = scan_repository(repo)
    assert models["locked"].error == f"{locked}: cannot be read: Permission denied"
    assert models["open"].error is None
    locked_paths.add(repo)
    with pytest.raises(RepositoryError, match=r"repository: expected a readable directory, got '.*repo' \(Permission denied\)"):
        scan_repository(repo)


# ---- the file shorthand ----

def test_single_files_name_models_after_their_files(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "b.v2.pt2").write_bytes(b"x")
    models = single_files([tmp_path / "b.v2.pt2", str(tmp_path / "a.pt")])
    assert list(models) == ["a", "b.v2"]
    assert models["a"] == ModelSource("a", {1: (tmp_path / "a.pt").resolve()}, ModelConfig(), None)
    assert models["b.v2"].selected() == [1]


def test_single_files_refusals(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one/m.pt").write_bytes(b"x")
    (tmp_path / "two/m.pt2").write_bytes(b"x")
    with pytest.raises(RepositoryError) as info:
        single_files([tmp_path / "one/m.pt", tmp_path / "two/m.pt2"])
    assert str(info.value) == (f"model: expected files with distinct names, got '{tmp_path / 'one/m.pt'}' "
                               f"and '{tmp_path / 'two/m.pt2'}', both named 'm'")
    with pytest.raises(RepositoryError, match=r"model: expected a model file, got '.*one' \(a directory"):
        single_files([tmp_path / "one/m.pt", tmp_path / "one"])
    with pytest.raises(RepositoryError, match=r"model: expected a model file, got '.*nope.pt' \(nothing is there\)"):
        single_files([tmp_path / "nope.pt"])
    (tmp_path / "bad name.pt").write_bytes(b"x")
    with pytest.raises(RepositoryError, match=r"model: the name from '.*bad name.pt': expected .*\(' ' is not allowed\)"):
        single_files([tmp_path / "bad name.pt"])


def test_reading_a_repository_imports_no_torch(tmp_path):
    import subprocess
    import sys
    _model(tmp_path, "m", 1, config="inputs = [\"x:FP32:-1,3\"]\n")
    code = ("import sys, berth.repository as r; r.scan_repository(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def _documented_examples():
    """The config.toml examples of berth.repository's docstring and of README.md."""
    import re
    import textwrap

    import berth.repository
    doc = berth.repository.__doc__
    module = textwrap.dedent(doc.split("``config.toml`` (every key optional", 1)[1].split("::\n", 1)[1]
                             .split("\nUnknown keys", 1)[0])
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()  # tests/serving/ -> root
    readme = readme.split("### A model repository", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    return [re.sub(r'"<64 lowercase hex digits[^>]*>"', f'"{SHA}"', text) for text in (module, readme)]


@pytest.mark.parametrize("index", [0, 1], ids=["module docstring", "README"])
def test_the_documented_config_examples_parse(index):
    config = parse_config(_documented_examples()[index], "example")
    assert config.inputs == ("image:FP32:-1,3,224,224",) and config.outputs == ("logits:FP32:-1,1000",)
    assert config.version_policy == VersionPolicy("latest", count=2) and list(config.sha256.values()) == [SHA]
    assert (config.max_batch_size, config.max_delay_ms, config.max_queue, config.workers) == (32, 2.0, 1024, 1)
