"""The analyst notebooks: committed clean (nbformat 4, no outputs, no absolute paths) and they run top
to bottom on a small simulated shop in the venv's own kernel, producing their figures and tables."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_explore_customers", "02_value_models", "03_recommendations_and_offers", "04_measure_offers"]
CELL_TIMEOUT = 300  # seconds per cell; a whole notebook takes ~5-15 s at 2,000 customers

# what each notebook must show: at least this many figures, and these texts somewhere in its outputs
EXPECTED = {
    "01_explore_customers": (4, ["purchase lines", "customer_retention_rate", "step_conversion", "dominant_segment"]),
    "02_value_models": (5, ["simulation truth", "Verdict", "lifetimes", "of the predicted 12-month CLV"]),
    "03_recommendations_and_offers": (2, ["popularity", "own_history", "recommended:", " via "]),
    "04_measure_offers": (1, ["decisions logged", "uplift over 30 days", "simulation truth", "switched off:",
                              "night 2 (with evidence)"]),
}
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(/(?:work|home|tmp|Users|root|mnt|opt|var)/|[A-Za-z]:\\\\)")


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: committed with outputs"
    sources = "\n".join(c.source for c in nb.cells)
    assert not ABSOLUTE_PATH.search(sources), ABSOLUTE_PATH.search(sources).group(0)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # the data source is a parameter: simulated by default, real data through REBUY_DATA
    assert "REBUY_DATA" in sources and "simulate(" in sources


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("REBUY_N_CUSTOMERS", "2000")
    monkeypatch.delenv("REBUY_DATA", raising=False)
    monkeypatch.delenv("REBUY_CONFIG", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # first, a probe: which Python runs the kernel
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys, json; print(json.dumps(sys.executable))"))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    kernel_python = json.loads(nb.cells[0].outputs[0].text)
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), "kernel is not the venv's python"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    min_images, texts = EXPECTED[name]
    assert len(images) >= min_images
    text = _outputs_text(nb)
    for expected in texts:
        assert expected in text, f"{name}: output lacks {expected!r}"
    assert "Traceback" not in text
