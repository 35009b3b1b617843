"""`difflm plot`: the four figures of a run are valid PNGs of a sensible size, and a figure a
run cannot have is left out with its reason."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from difflm.cli import main

pytest.importorskip("matplotlib", reason="plots need the eval extra (matplotlib)")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; AssertionError if it is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_the_figures_of_a_run(tiny_run, tmp_path, capsys):
    bench = tmp_path / "result.json"
    rows = [
        {"model": "diffusion", "sampler": "ddpm", "nfe": nfe, "grammatical": g} for nfe, g in ((4, 0.1), (16, 0.3))
    ] + [{"model": "autoregressive", "sampler": "autoregressive", "nfe": 20, "grammatical": 0.9}]
    bench.write_text(json.dumps({"rows": rows}))
    assert main(["plot", str(tiny_run), "--out", str(tmp_path / "plots"), "--bench", str(bench), "--steps", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = sorted(Path(p).name for p in report["written"])
    assert names == ["embeddings.png", "quality_vs_nfe.png", "training_curves.png", "trajectory.png"]
    for path in report["written"]:
        width, height = png_size(Path(path))
        assert 300 <= width <= 5000 and 200 <= height <= 3000, (path, width, height)
    assert report["skipped"] == {}


def test_a_saved_model_has_no_training_curves(tmp_path, capsys):
    assert main(["plot", "pretrained:grammar", "--out", str(tmp_path), "--steps", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "training_curves.png" in report["skipped"] and len(report["written"]) == 2
    assert main(["plot", "pretrained:grammar", "--out", str(tmp_path), "--bench", str(tmp_path / "none.json")]) == 2
    assert "not a bench/fast.py result.json" in capsys.readouterr().err
