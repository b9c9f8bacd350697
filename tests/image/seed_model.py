"""The seed MLP (10 -> 128 -> 64 -> 1, ReLU) saved as a berth TorchScript model, or as a
.pt2 package (berth.export) when the path ends in .pt2.

Shared by the deploy tests, the reference output in deploy/ and the image test. The
weights come from a fixed seed so the file, and so its sha256, is reproducible.
"""
import json
import sys

SIGNATURE = {
    "berth_format": 1,
    "inputs": [{"name": "dense_input", "dtype": "float32", "shape": [-1, 10]}],
    "outputs": [{"name": "output_0", "dtype": "float32", "shape": [-1, 1]}],
}


def seed_module(seed=0):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(10, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1)).eval()


def save_seed_model(path, seed=0, plain=False):
    """Script the seed MLP and save it with its berth.json signature (``plain``: without,
    as a plain torch.jit.save writes it); returns path."""
    import torch
    scripted = torch.jit.script(seed_module(seed))
    extra = {} if plain else {"berth.json": json.dumps(SIGNATURE, sort_keys=True)}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def export_seed_model(path, seed=0):
    """The seed MLP as a .pt2 package (torch.export + AOTInductor) with the same signature."""
    import torch

    import berth
    return berth.export(seed_module(seed), torch.zeros(2, 10), str(path), input_names=["dense_input"],
                        output_names=["output_0"])


if __name__ == "__main__":  # seed_model.py PATH [plain]
    if sys.argv[1].endswith(".pt2"):
        export_seed_model(sys.argv[1])
    else:
        save_seed_model(sys.argv[1], plain=sys.argv[2:] == ["plain"])
