"""bench/ncu_stalls.py (warp-state samples per SASS instruction from an Nsight Compute source page) on synthetic
CSV exports: no GPU or profiler needed."""

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ncu_stalls", ROOT / "bench" / "ncu_stalls.py")
ncu_stalls = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ncu_stalls)

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)",
          "Instructions Executed", "stall_long_sb", "stall_wait", "stall_math", "stall_long_sb (Not Issued)"]


def export(path, rows, header=HEADER):
    """A source page as ncu writes it: a line naming the kernel, the header, one row per instruction."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["Kernel Name", "void k(int)", ""])
        w.writerow(header)
        for row in rows:
            w.writerow(row)
    return path


def rows():
    # samples: 10 + 85 + 5 = 100; the first use of a load's result (IMAD) holds most of them
    return [["0x10", "  LDG.E.128 R4, desc[UR4][R2.64]", "10", "9", "64", "0", "10", "0", "0"],
            ["0x20", "  IMAD.U32 R8, R4, 0x10000, RZ", "85", "80", "64", "80", "3", "2", "78"],
            ["0x30", "  FADD R9, R8, R8", "5", "1", "64", "0", "1", "4", "0"]]


def test_shares_by_reason_and_the_hot_instructions(tmp_path):
    summary = ncu_stalls.summarize(*ncu_stalls.read(export(tmp_path / "k.csv", rows())), min_share=6.0)
    assert summary["samples"] == 100 and summary["instructions"] == 3
    assert summary["by_reason"] == {"long_sb": pytest.approx(80.0), "wait": pytest.approx(14.0),
                                    "math": pytest.approx(6.0)}
    assert [h["index"] for h in summary["hot"]] == [0, 1]  # the FADD's 5% is under 6%
    hot = summary["hot"][1]
    assert hot["share"] == pytest.approx(85.0) and hot["executed"] == 64
    assert hot["source"] == "IMAD.U32 R8, R4, 0x10000, RZ" and hot["reasons"] == [("long_sb", 80), ("wait", 3)]
    assert summary["hot"][0]["reasons"] == [("wait", 10)]  # reasons with no sample are not listed
    at_edge = ncu_stalls.summarize(*ncu_stalls.read(tmp_path / "k.csv"), min_share=5.0)
    assert [h["index"] for h in at_edge["hot"]] == [0, 1, 2]  # at least min_share: the FADD's 5% is in


def test_main_prints_the_summary(tmp_path, capsys):
    assert ncu_stalls.main([str(export(tmp_path / "k.csv", rows())), "--min-share", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("samples 100, SASS instructions 3\nby reason: long_sb 80.0%, wait 14.0%, math 6.0%\n")
    assert "    1  85.0% executed        64 IMAD.U32 R8, R4, 0x10000, RZ" in out and "LDG" not in out


def test_a_file_that_is_not_a_source_page_is_named(tmp_path, capsys):
    path = tmp_path / "details.csv"
    path.write_text('"ID","Kernel Name","Metric Name"\n"0","k","dram__bytes"\n')
    assert ncu_stalls.main([str(path)]) == 1
    assert "details.csv: expected an Nsight Compute source page" in capsys.readouterr().err


def test_a_page_without_stall_columns_or_samples_is_refused(tmp_path):
    no_stalls = [h for h in HEADER if not h.startswith("stall_")]
    path = export(tmp_path / "a.csv", [r[:5] for r in rows()], header=no_stalls)
    with pytest.raises(ncu_stalls.StallsError, match="expected stall_\\* columns"):
        ncu_stalls.read(path)
    empty = [[r[0], r[1], "0", "0", "64", "0", "0", "0", "0"] for r in rows()]
    with pytest.raises(ncu_stalls.StallsError, match="no warp-state samples"):
        ncu_stalls.summarize(*ncu_stalls.read(export(tmp_path / "b.csv", empty)), min_share=0.5)


def test_min_share_out_of_range_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        ncu_stalls.main([str(export(tmp_path / "k.csv", rows())), "--min-share", "101"])
