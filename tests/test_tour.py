"""The library tour in the book is checked cell by cell against its committed outputs with nbval."""

import os
import subprocess
import sys

import pytest

from actlab import runner


@pytest.mark.slow
def test_tour_outputs_match_the_committed_ones(repo_root):
    kernel = runner._ensure_kernel()
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "book/tour.ipynb",
         "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "--nbval-kernel-name", kernel],
        cwd=repo_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
