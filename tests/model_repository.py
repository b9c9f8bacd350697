"""Model repositories for `python -m berth serve REPO/`: add_version writes
REPO/name/version/model.pt, a Scale model (x * k) signed with META."""
import os

import torch

from conftest import save_script

META = {"berth_format": 1, "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]}


class Scale(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.register_buffer("k", torch.tensor(float(k)))

    def forward(self, x):
        return x * self.k


def add_version(repo, name, version, k, config=None):
    """REPO/name/version/model.pt answering x * k."""
    folder = repo / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.pt.tmp"
    save_script(Scale(k), tmp, META)
    os.replace(tmp, folder / "model.pt")  # whole, as a poll may look at any moment
    if config is not None:
        (repo / name / "config.toml").write_text(config)
    return folder / "model.pt"
