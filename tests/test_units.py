"""jaxtd.units: the one spelling of durations and memory sizes (CLI, run plan, benchmarks)."""

import pytest

from jaxtd.units import fmt_bytes, fmt_seconds


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (47.6, "48 s"), (119.4, "119 s"),
                                           (120, "2 min 0 s"), (185.2, "3 min 5 s"),
                                           (3725, "62 min 5 s")])
def test_fmt_seconds(seconds, text):
    assert fmt_seconds(seconds) == text


@pytest.mark.parametrize("n, text", [(512, "512 B"), (1536, "1.5 KB"), (5 * 2 ** 20, "5.0 MB"),
                                     (3 * 2 ** 30, "3.0 GB"), (2048 * 2 ** 30, "2048.0 GB")])
def test_fmt_bytes(n, text):
    assert fmt_bytes(n) == text
