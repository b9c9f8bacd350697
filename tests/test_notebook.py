"""The quickstart notebook runs top to bottom in a fresh ``python3`` kernel.

Executed with nbclient in a scratch directory (so ``model.pt`` does not land in
the repository); any failing cell fails the test.
"""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _kernel_env():
    """The test's environment with this checkout's ``berth`` first on the kernel's path."""
    env = dict(os.environ)
    import berth

    package_parent = str(pathlib.Path(berth.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets the kernel's debugger start-up warning
    return env


def test_quickstart_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=_kernel_env())
    except CellExecutionError as error:
        pytest.fail(f"notebook cell failed:\n{error}")

    outputs = ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in nb.cells if cell.cell_type == "code"]
    text = "\n".join(outputs)
    assert "Total params: 9,729" in text
    assert "C core and training model agree on all 200 test samples" in text
    assert "input 'dense_input' expects shape (-1, 10), got (3, 7)" in text
    assert any(o.get("data", {}).get("image/png") for cell in nb.cells for o in cell.get("outputs", [])), \
        "the learning curve should be plotted"
    assert (tmp_path / "model.pt").is_file()
    assert "image: my-model:" in text and "k8s/deployment.yaml" in text
    assert (tmp_path / "deploy" / "Dockerfile").is_file()
    assert "the server's answer matches berth.load(...).predict" in text and "server exit status: 0" in text
