"""The README's main command runs the whole seed workflow and says where things went."""
import os
import re
import subprocess
import sys


def test_demo_trains_saves_deploys_and_serves(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "berth", "demo", "--out", str(out), "--epochs", "2"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = result.stdout
    import torch
    pt2 = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 6)
    saved = (f"saved torch.export + AOTInductor package + berth.json -> {out / 'model.pt2'}" if pt2
             else f"saved TorchScript + berth.json -> {out / 'model.pt'}")
    assert saved in text, text
    diff = re.search(r"server answer equals berth.load\(\.\.\., optimize=True\)\.predict: max \|diff\| = (\S+)", text)
    assert diff and float(diff.group(1)) < 1e-6, text  # float rounding only (see assert_same_answer)
    assert "exited with status 0" in text
    assert os.path.isfile(out / "deploy" / "Dockerfile")
    assert os.path.isfile(out / "deploy" / "k8s" / "deployment.yaml")
