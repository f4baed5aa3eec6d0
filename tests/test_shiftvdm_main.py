"""shiftvdm/__main__.py: `python -m shiftvdm` is the CLI, and its exit status is the command's."""

from __future__ import annotations

import runpy
import sys

import pytest

import shiftvdm


def run_module(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["shiftvdm", *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("shiftvdm", run_name="__main__", alter_sys=False)
    return stop.value.code


def test_python_dash_m_runs_the_cli_with_its_exit_status(monkeypatch, capsys):
    assert run_module(monkeypatch, "--version") == 0
    assert capsys.readouterr().out.strip() == shiftvdm.__version__
    assert run_module(monkeypatch, "shfit") != 0  # an unknown command fails the process
    assert "shift" in capsys.readouterr().err  # ...suggesting the close one
