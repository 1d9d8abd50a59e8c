"""The benchmarks' peak memory is the measured process's own, not its parent's."""

import subprocess
import sys

import numpy as np
import pytest

from feedback_pipeline.bench.ingest import peak_rss_bytes, reset_peak_rss

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_of_a_large_parent_reports_its_own_peak() -> None:
    held = np.ones(600 * MIB, dtype=np.uint8)  # resident in this process while the child starts
    code = "from feedback_pipeline.bench.ingest import peak_rss_bytes; print(peak_rss_bytes())"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert held.sum() == held.size
    assert printed.returncode == 0, printed.stderr
    assert int(printed.stdout) < 400 * MIB  # the interpreter and NumPy, not the 600 MiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_peak_starts_again_from_a_reset() -> None:
    grown = np.ones(300 * MIB, dtype=np.uint8)
    assert grown.sum() == grown.size
    high = peak_rss_bytes()
    del grown

    assert reset_peak_rss()
    assert peak_rss_bytes() < high - 200 * MIB
