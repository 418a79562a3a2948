"""Smoke test of the scale benchmark: ``python -m bench.scale --objects 300`` runs end to end and passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_bench_scale_smoke_mirrors_then_noop_without_per_object_requests(tmp_path: Path) -> None:
    """300 objects: both passes under the RSS target, the no-op pass makes 0 per-object requests."""
    out = tmp_path / "S.md"
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--objects", "300", "--out", str(out), "--workdir", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    text = out.read_text()
    assert text.strip() == done.stdout.strip()  # the same report on stdout and in --out
    assert "| per-object requests, no-op pass | 0 | 0 | pass |" in text
    assert "| mirror folder after pass 1 | 300 files, sizes match | exact | pass |" in text
    assert "| mirror files changed by pass 2 | 0 | 0 | pass |" in text
    noop_rows = [line for line in text.splitlines() if line.startswith("| no-op (pass 2, counted) | ")]
    assert len(noop_rows) == 1, noop_rows
    assert "FAIL" not in text
    assert "Result: pass" in text
    assert not work.exists()  # removed at the end without --keep


@pytest.mark.timeout(150)
def test_bench_scale_events_smoke_measures_both_modes(tmp_path: Path) -> None:
    """200 objects on moto_server: both modes deliver every change; the idle events daemon sends no S3 request."""
    out = tmp_path / "E.md"
    work = tmp_path / "work"
    argv = ["--events", "--objects", "200", "--changes", "3", "--spacing", "0.3", "--poll-interval", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", *argv, "--idle", "3", "--out", str(out), "--workdir", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    text = out.read_text()
    assert text.strip() == done.stdout.strip()
    assert "| events: changes that reached the mirror | 3 | all | pass |" in text
    assert "| polling: changes that reached the mirror | 3 | all | pass |" in text
    assert "| events: S3 requests of the idle daemon (each would grow with the bucket) | 0 | 0 | pass |" in text
    assert "`events check passed: ObjectCreated after " in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith(("| events | ", "| polling | "))]
    assert rows == ["| events", "| polling"]
    assert "Result: pass" in text
    assert not work.exists()
