"""The parser measurement runs end to end on a tiny count and reports what the issue asks for."""

from __future__ import annotations

import pytest

from tests.bench import http_parsers


def test_every_case_is_measured_for_both_parsers_with_positive_figures() -> None:
    rows = http_parsers.measure(count=40, repeats=1)
    assert {(r["case"], r["parser"]) for r in rows} == {
        (c.name, p) for c in http_parsers.CASES for p in http_parsers.PARSERS
    }
    for r in rows:
        assert r["ns_per_message"] > 0 and r["mb_per_s"] > 0, r
        assert r["messages"] >= 1
    pipelined = next(r for r in rows if r["case"].endswith("pipelined") and r["parser"] == "httptools")
    assert pipelined["messages"] % http_parsers.PIPELINE == 0


def test_table_has_a_line_per_case_with_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert http_parsers.main(["--count", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for case in http_parsers.CASES:
        assert case.name in out
    assert "h11/httptools" in out


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(SystemExit):
        http_parsers.main(["--count", "0"])


def test_a_64k_body_arrives_in_several_reads() -> None:
    big = next(c for c in http_parsers.CASES if "64 KiB" in c.name)
    assert len(http_parsers._reads(big.data)) == 2  # headers + 64 KiB exceed one 64 KiB read
