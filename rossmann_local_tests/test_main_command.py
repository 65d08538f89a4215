"""The README's main command: a simulated day of every shop through a Dagster instance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rossmann_local.day import main


def test_a_simulated_day_of_every_shop_runs_and_reruns_without_doubling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    first = capsys.readouterr().out
    assert re.search(r"^all\s+10/10\s", first, re.MULTILINE), first
    assert [line.split()[:2] for line in first.splitlines()[3:8]] == [
        ["1", "Berlin"], ["2", "Nurnberg"], ["3", "Nurnberg"], ["4", "La"], ["5", "La"]]
    assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "data" / "shops").glob("*.sqlite")) == [
        f"shop_{i}.sqlite" for i in range(1, 6)]

    assert main([]) == 0
    again = capsys.readouterr().out
    table = lambda out: [line for line in out.splitlines()[1:] if not line.startswith("Data")]  # noqa: E731
    assert table(again) == table(first), "a re-run replaces the day with the same figures"


def test_a_bad_setting_stops_with_a_message_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROSSMANN_SHOP_COUNT", "zero")
    assert main([]) == 2
    assert "ROSSMANN_SHOP_COUNT" in capsys.readouterr().err
