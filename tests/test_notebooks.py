"""The example notebooks run from top to bottom, as the docs build runs them.

They are MyST Markdown notebooks (docs/notebooks/*.md): read with myst-nb's reader and executed
in a fresh kernel with nbclient, the same pair the documentation build uses. Skipped, with the
reason, only where the analytics extra or the notebook tools are not installed; the ``test``
extra brings both, so CI runs them.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

for _module in ("pandas", "pyarrow", "matplotlib"):
    pytest.importorskip(_module, reason="the analytics extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")
read = pytest.importorskip("myst_nb.core.read", reason="the notebooks extra is not installed")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "docs" / "notebooks").glob("*.md"))


def test_both_notebooks_are_found() -> None:
    """The two example notebooks the docs show."""
    assert [p.stem for p in NOTEBOOKS] == [
        "explore-referral-performance",
        "what-if-payer-rules",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    """Every cell runs without an error, and the outputs show no patient identifier (the
    synthetic MRNs start with SYN-, the survey comments are 'free text (PHI)')."""
    notebook = read.read_myst_markdown_notebook(path.read_text(encoding="utf-8"))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    with warnings.catch_warnings():
        # jupyter_client's own deprecation notices (paths, datetimes) are not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        client.execute()
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert cells
    shown = []
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            shown.append(str(output.get("text", "")))
            shown.extend(str(v) for k, v in output.get("data", {}).items() if "image" not in k)
    text = "\n".join(shown)
    assert text
    assert not re.search(r"SYN-\d", text)
    assert "free text (PHI)" not in text
