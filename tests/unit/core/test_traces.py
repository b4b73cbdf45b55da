"""Bandwidth traces: the data type, readers (checked against the real traces' README table), generators."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.core.traces import (
    MAHIMAHI_PACKET_BYTES,
    MARKOV_3G,
    MARKOV_LTE,
    BandwidthTrace,
    MarkovModel,
    builtin_trace_path,
    constant,
    fit_markov,
    markov,
    parse_cooked,
    parse_mahimahi,
    read_trace,
    steps,
)
from edgeflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "traces"
needs_shared = pytest.mark.skipif(not (SHARED / "README.md").is_file(),
                                  reason=f"real traces not found at {SHARED} (../shared/traces from the repo root)")


# --- the data type ---------------------------------------------------------------------------------------


def test_rate_at_holds_each_segment_and_loops():
    t = steps([(1.0, 10e6), (2.0, 5e6)])
    assert t.duration_s == 3.0 and len(t) == 2
    assert [t.rate_at(x) for x in (0.0, 0.99, 1.0, 2.99, 3.0, 4.5, 7.0)] == [10e6, 10e6, 5e6, 5e6, 10e6, 5e6, 5e6]
    assert t.mean_bps == pytest.approx((10e6 + 2 * 5e6) / 3)
    assert t.scaled(0.5).rate_at(0.5) == 5e6 and t.scaled(0.5).duration_s == 3.0


def test_bits_between_and_time_after_across_loops_and_zero_rate():
    t = steps([(1.0, 8e6), (1.0, 0.0), (2.0, 4e6)])  # 8 + 0 + 8 = 16 Mbit per 4-s period
    assert t.bits_between(0.5, 4.5) == pytest.approx(16e6)
    assert t.time_after(0.5, 4e6) == pytest.approx(1.0)
    assert t.time_after(0.9, 1e6) == pytest.approx(2.05)  # 0.8 Mbit by 1.0, stall to 2.0, 0.2 Mbit at 4
    assert t.time_after(0.0, 32e6) == pytest.approx(8.0)
    assert t.time_after(3.0, 0) == 3.0
    assert math.isinf(constant(0.0).time_after(0.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(rates=st.lists(st.floats(0, 1e9), min_size=1, max_size=6), t0=st.floats(0, 100), frac=st.floats(0.01, 5))
def test_time_after_inverts_bits_between(rates, t0, frac):
    t = steps([(0.5 + i, r) for i, r in enumerate(rates)])
    if t.mean_bps == 0:
        return
    nbits = frac * t.mean_bps
    t1 = t.time_after(t0, nbits)
    assert t1 >= t0
    assert t.bits_between(t0, t1) == pytest.approx(nbits, rel=1e-6, abs=1e-3)


def test_samples_cover_the_interval_ending_at_their_time():
    t = BandwidthTrace.from_samples([0.0, 1.0, 3.0], [1e6, 2e6, 3e6])  # first sample: given the next length
    assert list(t.times_s) == [0.0, 1.0, 2.0] and t.duration_s == 4.0
    assert t.rate_at(2.5) == 3e6  # the 2-s gap before the last sample runs at its rate
    later = BandwidthTrace.from_samples([0.5, 1.0], [1e6, 2e6])
    assert list(later.times_s) == [0.0, 0.5] and later.duration_s == 1.0


def test_cooked_text_round_trip():
    for t in (steps([(0.25, 1e6), (1.5, 2.5e6), (0.75, 0.0)]), markov(MARKOV_LTE, 30, seed=3)):
        back = parse_cooked(t.to_cooked_text())
        np.testing.assert_allclose(back.times_s, t.times_s, atol=1e-6)
        np.testing.assert_allclose(back.rate_bps, t.rate_bps, atol=1.0)
        assert back.duration_s == pytest.approx(t.duration_s, abs=1e-6)


@pytest.mark.parametrize("times, rates, duration", [
    ([0.0, 1.0], [1.0], 2.0), ([0.5], [1.0], 2.0), ([0.0, 1.0, 1.0], [1, 1, 1], 3.0), ([0.0], [-1.0], 1.0),
    ([0.0], [math.nan], 1.0), ([0.0, 1.0], [1, 1], 1.0),
])
def test_invalid_traces_raise(times, rates, duration):
    with pytest.raises(ConfigError):
        BandwidthTrace(times, rates, duration)


# --- readers ---------------------------------------------------------------------------------------------


def _readme_table() -> list[dict[str, str]]:
    rows = []
    for line in (SHARED / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[1].startswith("`"):
            keys = ["dataset", "file", "bytes", "lines", "duration_s", "mean", "median", "p5", "p95", "min", "max"]
            rows.append(dict(zip(keys, cells)) | {"file": cells[1].strip("`")})
    return rows


@needs_shared
def test_readme_table_is_found():
    assert len(_readme_table()) == 18


@needs_shared
@pytest.mark.parametrize("row", _readme_table() if (SHARED / "README.md").is_file() else [], ids=lambda r: r["file"])
def test_real_traces_match_the_readme_table(row):
    """Mean and median within 2 % (or the table's rounding, 0.006); p5/p95/min/max within 5 % or 0.011."""
    path = SHARED / row["dataset"] / row["file"]
    t = read_trace(path)  # auto: mahimahi files have one column, the others two
    s = t.sample_stats()
    for key, rel, abs_ in (("mean", 0.02, 0.006), ("median", 0.02, 0.006), ("p5", 0.05, 0.011),
                           ("p95", 0.05, 0.011), ("min", 0.05, 0.011), ("max", 0.05, 0.011)):
        assert s[key] == pytest.approx(float(row[key]), rel=rel, abs=abs_), (key, s[key], row[key])
    if row["dataset"] == "mahimahi_cellular":
        packets = t.bits_between(0, t.duration_s) / (8 * MAHIMAHI_PACKET_BYTES)
        assert packets == pytest.approx(int(row["lines"]))  # every delivery opportunity is kept
    else:
        assert len(t) == int(row["lines"])
        assert t.duration_s - t.times_s[1] == pytest.approx(float(row["duration_s"]), abs=0.05)


@needs_shared
def test_belgium_train_near_outage_is_kept():
    t = read_trace(SHARED / "belgium_4g_lte" / "report_train_0003.log", "cooked")
    zero_s = sum(b - a for a, b, r in zip(t.times_s, np.append(t.times_s[1:], t.duration_s), t.rate_bps) if r < 0.1e6)
    assert zero_s > 30  # zeros and time gaps: the README's ~60-s near-outage
    assert 191.0 < t.times_s[np.argmax(np.diff(t.times_s))] + 1 < 198  # the 6.2-s gap at 191 -> 197.181


@needs_shared
def test_mahimahi_bins_are_configurable_and_keep_bytes():
    path = SHARED / "mahimahi_cellular" / "ATT-LTE-driving-2016.down"
    coarse, fine = read_trace(path, "mahimahi", bin_s=1.0), read_trace(path, "mahimahi", bin_s=0.1)
    assert len(fine) == 10 * len(coarse) - 9 and fine.duration_s == pytest.approx(120.1)
    assert fine.bits_between(0, fine.duration_s) == pytest.approx(coarse.bits_between(0, coarse.duration_s))
    assert fine.rate_bps.std() > coarse.rate_bps.std()


def test_raw_logs_use_bytes_over_elapsed_ms(tmp_path):
    raw = tmp_path / "bus.report.log"
    raw.write_text(
        "1285675752 1285675752466 59.890217 10.521739 0 0\n"          # no interval: skipped
        "1285675753 1285675753468 59.890217 10.521739 125000 1002\n"  # 125 kB in 1.002 s
        "1285675754 1285675754468 59.890301 10.521802 250000 1000\n"
    )
    for fmt in ("auto", "norway_raw", "belgium_raw"):
        t = read_trace(raw, fmt)
        np.testing.assert_allclose(t.rate_bps, [125000 * 8 / 1.002, 2e6])
        assert t.duration_s == pytest.approx(2.0)


@pytest.mark.parametrize("text, fmt, where", [
    ("0.0 1.0\n1.0 x\n", "cooked", ":2: rate 'x' is not a number"),
    ("0.0 1.0\n1.0 2.0 3.0\n", "cooked", ":2: expected 2 columns"),
    ("0.0 1.0\n\n# note\n0.0 2.0\n", "cooked", ":4: time 0.0 does not come after 0.0 (line 1)"),
    ("0.0 1.0\n1.0 -2\n", "cooked", ":2: rate -2.0 Mbit/s is negative"),
    ("0\n5\n3\n", "mahimahi", ":3: time 3 does not come after 5"),
    ("0\n5\n1.5\n", "mahimahi", ":3: expected one non-negative integer"),
    ("1 2 3 4 5 6\n1 2 3 4 5\n", "norway_raw", ":2: expected 6 columns"),
    ("1 2 3\n", "auto", ":1: cannot tell the trace format from 3 columns"),
    ("# only a comment\n", "auto", "trace has no data lines"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, fmt, where):
    path = tmp_path / "bad.log"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_trace(path, fmt)
    assert str(path) in str(e.value) and where in str(e.value)


def test_reader_errors_for_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="cannot read trace"):
        read_trace(tmp_path / "absent.log")
    with pytest.raises(ConfigError, match="not one of"):
        read_trace(tmp_path / "absent.log", "pcap")


# --- generators ------------------------------------------------------------------------------------------


def test_markov_is_seeded_and_holds_each_state_one_step():
    a, b, c = markov(MARKOV_3G, 100, seed=7), markov(MARKOV_3G, 100, seed=7), markov(MARKOV_3G, 100, seed=8)
    np.testing.assert_array_equal(a.rate_bps, b.rate_bps)
    assert not np.array_equal(a.rate_bps, c.rate_bps)
    assert len(a) == 100 and a.duration_s == 100.0
    two = MarkovModel(((1e6, 1e6), (5e6, 5e6)), ((0.0, 1.0), (1.0, 0.0)), step_s=0.5)
    assert set(np.diff(markov(two, 10, seed=0).rate_bps)) <= {4e6, -4e6}  # alternates every step


@pytest.mark.parametrize("model, mean, p5, p95", [(MARKOV_3G, 1.43, 0.17, 3.36), (MARKOV_LTE, 25.1, 4.0, 48.3)])
def test_presets_reproduce_the_calibration_stats(model, mean, p5, p95):
    """Long paths match the pooled real-log stats the presets were fitted to (docs/NETEM.md)."""
    s = markov(model, 50_000, seed=0).sample_stats()
    assert s["mean"] == pytest.approx(mean, rel=0.03)
    assert s["p5"] == pytest.approx(p5, rel=0.10)
    assert s["p95"] == pytest.approx(p95, rel=0.03)
    assert model.mean_bps() / 1e6 == pytest.approx(mean, rel=0.02)


@needs_shared
@pytest.mark.parametrize("folder, preset", [("norway_hsdpa", MARKOV_3G), ("belgium_4g_lte", MARKOV_LTE)])
def test_presets_are_the_fit_of_the_real_logs(folder, preset):
    logs = [read_trace(p, "cooked") for p in sorted((SHARED / folder).iterdir())]
    pooled = np.concatenate([t.rate_bps for t in logs]) / 1e6
    fitted = fit_markov([t.rate_bps for t in logs])
    np.testing.assert_allclose(np.asarray(fitted.levels_bps), np.asarray(preset.levels_bps), rtol=2e-3, atol=500)
    np.testing.assert_allclose(fitted.matrix(), preset.matrix(), atol=2e-3)
    np.testing.assert_allclose(fitted.shapes, preset.shapes, atol=2e-3)
    assert preset.mean_bps() / 1e6 == pytest.approx(pooled.mean(), rel=0.01)


def test_fit_recovers_a_known_chain():
    truth = MarkovModel(((1e6, 2e6), (10e6, 12e6)), ((0.9, 0.1), (0.2, 0.8)))
    fitted = fit_markov([markov(truth, 20_000, seed=1).rate_bps], edges_bps=(5e6,))
    np.testing.assert_allclose(fitted.matrix(), truth.matrix(), atol=0.02)
    assert fitted.mean_bps() == pytest.approx(truth.mean_bps(), rel=0.02)


@pytest.mark.parametrize("name, model, seed", [("markov-3g", MARKOV_3G, 1), ("markov-lte", MARKOV_LTE, 9)])
def test_builtin_traces_are_regenerable(name, model, seed):
    shipped = read_trace(builtin_trace_path(name))
    again = markov(model, 600, seed=seed)
    np.testing.assert_allclose(shipped.rate_bps, again.rate_bps, atol=1.0)
    assert shipped.duration_s == 600.0
    with pytest.raises(ConfigError, match="no built-in trace"):
        builtin_trace_path("nope")


def test_generator_and_model_validation():
    with pytest.raises(ConfigError):
        steps([])
    with pytest.raises(ConfigError):
        steps([(0.0, 1e6)])
    with pytest.raises(ConfigError):
        MarkovModel(((0, 1),), ((0.5, 0.5),))
    with pytest.raises(ConfigError):
        MarkovModel(((2, 1),), ((1.0,),))
    with pytest.raises(ConfigError):
        parse_mahimahi("0\n", bin_s=0)
    assert re.fullmatch(r"(\d+\.\d{6} \d+\.\d{6}\n)+", constant(2e6, 3).to_cooked_text())
