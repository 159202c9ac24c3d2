"""No new block of code repeated across notebooks: shared code belongs in actlab."""

import nbformat
import pytest

from actlab import runner
from repetition import MIN_LINES, find_repeats

# Repeats accepted for a stated reason, each keyed by notebook pair and block hash. Empty: every block
# two notebooks shared has moved into actlab.
BASELINE: set[str] = set()


def test_no_new_repeated_block_across_notebooks():
    repeats = find_repeats(sorted(runner.list_notebooks().values()))
    new = [str(r) for r in repeats if r.key not in BASELINE]
    assert not new, "code repeated across notebooks (move it into actlab):\n" + "\n".join(new)
    gone = sorted(BASELINE - {r.key for r in repeats})
    assert not gone, "baseline entries no longer repeated; remove them from BASELINE: " + ", ".join(gone)


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A title")] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


SHARED = "\n".join(f"value_{i} = compute(step={i}, scale={i} * 2.5, name='v{i}')" for i in range(MIN_LINES))


@pytest.mark.parametrize("lines, found", [(MIN_LINES, True), (MIN_LINES - 2, False)])
def test_a_repeated_block_is_found_and_named_in_both_notebooks(tmp_path, lines, found):
    block = "\n".join(SHARED.splitlines()[:lines])
    first = _notebook(tmp_path / "first.ipynb", ["import math\nx = math.pi", block])
    second = _notebook(tmp_path / "second.ipynb", ["y = 1\nz = y + 2\nprint(z)", "w = 5", block])
    repeats = find_repeats([first, second])
    assert bool(repeats) is found
    if found:
        text = str(repeats[0])
        assert "notebooks/first.ipynb cell 2 line 1" in text and "notebooks/second.ipynb cell 3 line 1" in text
