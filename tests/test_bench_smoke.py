"""Smoke test of the peer benchmark: ``python -m bench.run --smoke`` runs end to end and writes its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_bench_smoke_writes_every_table(tmp_path: Path) -> None:
    """The tiny benchmark exits 0 and reports every scenario, a row for s3sync, and the daemon section."""
    out = tmp_path / "B.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    text = out.read_text()
    for scenario in ("upload", "mirror", "upload-layout", "mirror-layout", "noop", "large-up", "large-down"):
        assert f"## {scenario}:" in text, scenario
    s3sync_rows = [line for line in text.splitlines() if line.startswith("| s3sync | ")]
    assert len(s3sync_rows) >= 7, s3sync_rows  # one per scenario table (and one in the summary)
    assert "FAILED:" not in text
    # Each scenario had one untimed warm-up run (by the last tool of round 1), and it is not in the table.
    log = done.stdout + done.stderr
    for scenario in ("upload", "mirror", "noop", "large-up", "large-down"):
        assert f"{scenario:<10} warm-up " in log, scenario
    rows = [line.split("|") for line in text.splitlines() if line.startswith(("| rclone | ", "| s5cmd | "))]
    assert rows, "no peer rows"
    assert all("," not in row[3] for row in rows if len(row) > 4), rows  # one round: one time per cell
    assert "## daemon:" in text
    assert "| latency p50 |" in text
