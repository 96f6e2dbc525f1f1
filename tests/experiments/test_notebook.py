"""``paper_repro.ipynb`` runs top to bottom, and is the notebook its generator writes."""

import json
import os

import nbformat
from _lib import ROOT

NOTEBOOK = ROOT / "paper_repro.ipynb"


def test_notebook_is_generated_and_committed_without_outputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebook",
                                                  ROOT / "experiments" / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in module.build().cells], (
        "paper_repro.ipynb is stale: run `python experiments/make_notebook.py`")
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_notebook_executes(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, json.dumps(errors[:1])[:2000]
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "NFE with ERK-Guid 31, plain Heun 31" in text
