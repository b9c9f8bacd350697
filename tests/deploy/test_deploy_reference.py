"""The top-level deploy/ is exactly what berth deploy writes today for the seed model."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # tests/deploy/ -> the repository


def _reference_module():
    spec = importlib.util.spec_from_file_location("reference", REPO / "tests/validate/reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_reference_output_is_up_to_date():
    import torch
    reference = _reference_module()
    if torch.__version__.split("+")[0] != reference.REFERENCE_TORCH:
        pytest.skip(f"deploy/ holds a model saved by torch {reference.REFERENCE_TORCH}; "
                    f"this is torch {torch.__version__} (the PyPI stack checks it)")
    stale = reference.differences(REPO / "deploy")
    assert stale == [], ("deploy/ is out of date with berth deploy; regenerate it with "
                         f"`make deploy-reference`. Differing files: {stale}")


def test_the_staleness_check_notices_a_changed_file(tmp_path):
    reference = _reference_module()
    files = reference.reference_files()
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert reference.differences(tmp_path) == []
    hpa = tmp_path / "k8s/hpa.yaml"
    hpa.write_text(hpa.read_text().replace("maxReplicas: 10", "maxReplicas: 11"))
    (tmp_path / "k8s/extra.yaml").write_text("kind: Unexpected\n")
    (tmp_path / "Dockerfile").unlink()
    assert reference.differences(tmp_path) == ["Dockerfile", "k8s/extra.yaml", "k8s/hpa.yaml"]
