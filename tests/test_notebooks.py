"""The notebooks in docs/notebooks run clean from top to bottom, and are stored without outputs.

Each notebook is executed in a real Jupyter kernel (nbclient + ipykernel) of
this Python, so its ``assert`` cells check symgrad as it is now.  matplotlib
gets the Agg backend (no display needed).  The drawings are rendered by
graphviz's ``dot`` when the notebook shows them, hence ``needs_dot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the dev extra: pip install -e '.[dev]'")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"
LECTURE = NOTEBOOKS / "micrograd_with_symgrad.ipynb"


def _read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


def test_notebooks_readme_links_every_notebook() -> None:
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS.glob("*.ipynb"):
        assert f"]({path.name})" in readme


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    nb = _read(LECTURE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLBACKEND", "Agg")
        client = nbclient.NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}}
        )
        client.execute()
    return nb


def _outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.slow
@pytest.mark.needs_dot
def test_the_lecture_notebook_runs_clean(executed: Any) -> None:
    outputs = _outputs(executed)
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(cell.execution_count for cell in executed.cells if cell.cell_type == "code")


@pytest.mark.slow
@pytest.mark.needs_dot
def test_the_lecture_notebook_shows_drawings_and_explain_tables(executed: Any) -> None:
    rich = [o for o in _outputs(executed) if o.output_type in ("execute_result", "display_data")]
    svgs = [o for o in rich if "image/svg+xml" in o.data]
    assert len(svgs) >= 3  # draw_dot of L (twice) and of the neuron
    tables = [o.data["text/html"] for o in rich if "symgrad-explain" in o.data.get("text/html", "")]
    assert any("1 - out² = 0.5" in html for html in tables)  # the tanh neuron
    assert any("+= 1 from %1" in html for html in tables)  # the a + a lesson
