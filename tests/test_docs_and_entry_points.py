"""The README's commands run as written, and the installed command behaves as documented."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, SAMPLE

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def _readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def _readme_commands() -> list[str]:
    return [line for block in _readme_blocks("sh") for line in block.splitlines()
            if line.startswith("infonce ")]


def _environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quickstart, flags=re.DOTALL)
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert "infonce score" in commands[0]
    assert "sample_data/" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_command_runs(tmp_path, command):
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    pipeline = "&&" in command or "|" in command
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command] if pipeline
                            else shlex.split(command), cwd=tmp_path, env=_environment(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    if "--format json" in command and "--per-sample -" not in command and not pipeline:
        out = json.loads(result.stdout)
        assert out.get("n", out.get("queries", 0)) > 0


@pytest.mark.parametrize("example", _readme_blocks("python"))
def test_readme_python_example_runs(example, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(example, "README.md", "exec"), {})


def test_quickstart_commands_run_on_sample_data():
    quickstart = re.findall(r"```sh\n(.*?)\n```", README, flags=re.DOTALL)[0]
    runs = [part.replace(".venv/bin/infonce", "infonce", 1) for part in quickstart.split(" && ")
            if part.startswith(".venv/bin/infonce ")]
    assert [shlex.split(run)[1] for run in runs] == ["score", "sweep-temperature"]
    for run in runs:
        result = subprocess.run(shlex.split(run) + ["--format", "json"], cwd=ROOT,
                                env=_environment(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["n"] == 400


def test_installed_command_and_module_entry_point(tmp_path):
    args = ["score", "-q", str(ROOT / "sample_data/queries.npy"), "-p",
            str(ROOT / "sample_data/positives.npy")]
    installed = subprocess.run([str(BIN / "infonce"), *args], capture_output=True, text=True,
                               timeout=120, env=_environment())
    module = subprocess.run([sys.executable, "-m", "infonce_cli", *args], capture_output=True,
                            text=True, timeout=120)
    assert installed.returncode == module.returncode == 0
    first, second = json.loads(installed.stdout), json.loads(module.stdout)
    assert first["loss"] == second["loss"]


def test_installed_command_reports_errors_in_one_line():
    result = subprocess.run([str(BIN / "infonce"), "score", "-q", "nope.npy", "-p", "nope.npy"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == "error: nope.npy: no such file\n"


def test_npy_inputs_do_not_import_pyarrow():
    """pyarrow takes about 0.1 s to load; only Parquet input or output needs it."""
    code = ("import sys\nfrom infonce_cli.cli import main\n"
            "sys.argv = ['infonce', 'score', '-q', 'queries.npy', '-p', 'positives.npy',"
            " '--format', 'json', '--quiet']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('pyarrow' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=SAMPLE)
    assert result.stderr.strip() == "False"
    assert json.loads(result.stdout)["n"] == 400


def test_help_does_not_import_torch():
    code = ("import sys\nfrom infonce_cli.cli import main\nsys.argv = ['infonce', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stderr.strip() == "False"
    assert "score" in result.stdout


def test_the_collector_is_paused_for_the_imports_only(monkeypatch, capsys):
    """The entry point pauses garbage collection while it imports torch and the pipeline,
    and resumes it, freezing what was imported, before the run (which goes with it on)."""
    import gc
    import types

    from infonce_cli import cli, runs

    calls, seen = [], []

    def recorded(name):
        def call():
            calls.append(name)
            return getattr(gc, name)()
        return call

    monkeypatch.setattr(cli, "gc", types.SimpleNamespace(
        disable=recorded("disable"), enable=recorded("enable"), freeze=recorded("freeze"),
        isenabled=gc.isenabled))
    real = runs.run_score

    def recording(request, progress):
        seen.append((list(calls), gc.isenabled()))
        return real(request, progress)

    monkeypatch.setattr(runs, "run_score", recording)
    monkeypatch.setattr(sys, "argv", ["infonce", "score", "-q", str(SAMPLE / "queries.npy"),
                                      "-p", str(SAMPLE / "positives.npy"), "--format", "json"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        gc.unfreeze()  # the rest of the test session's objects collectable again
    assert exit_info.value.code in (0, None)
    assert seen == [(["disable", "freeze", "enable"], True)]
    assert gc.isenabled()
    assert json.loads(capsys.readouterr().out)["n"] == 400
