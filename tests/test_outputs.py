"""Outputs: refused before any work when they clash with an input or each other, written
whole or not at all, devices and pipes written directly, every write error one line."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infonce_cli import io
from infonce_cli.cli import app
from infonce_cli.errors import ExitCode, OutputError, UsageError
from infonce_cli.io import outputs

from .conftest import ROOT, SAMPLE

ROOT_USER = os.geteuid() == 0


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- check_outputs


@pytest.mark.parametrize("second", ["s.jsonl", "./s.jsonl", "sub/../s.jsonl", "link.jsonl",
                                    "linked_dir/s.jsonl"])
def test_two_outputs_naming_one_file_are_refused(workdir, second):
    (workdir / "sub").mkdir()
    os.symlink("s.jsonl", "link.jsonl")  # dangling until the file exists
    os.symlink(".", "linked_dir")
    with pytest.raises(UsageError) as raised:
        io.check_outputs({"output": "s.jsonl", "per_sample": second}, [])
    assert str(raised.value) == "per_sample and output name the same file s.jsonl"
    assert raised.value.for_command_line() == \
        "--per-sample and --output name the same file s.jsonl"
    assert raised.value.exit_code == ExitCode.USAGE_ERROR


def test_two_outputs_hard_linked_to_one_file_are_refused(workdir):
    Path("a.json").write_text("{}")
    os.link("a.json", "b.json")
    with pytest.raises(UsageError, match="^plot and output name the same file a.json$"):
        io.check_outputs({"output": "a.json", "plot": "b.json"}, [])


def test_outputs_that_do_not_clash_pass(workdir):
    io.check_outputs({"output": "a.json", "per_sample": "-", "plot": None, "run": "r.txt"},
                     ["q.npy"])
    io.check_outputs({"output": "/dev/null", "per_sample": "/dev/null"}, [])  # a sink


@pytest.mark.parametrize("output", ["ids.npy", "./ids.npy", "alias.npy"])
def test_an_output_naming_any_input_is_refused(workdir, output):
    np.save("q.npy", np.ones((2, 2), "f4"))
    np.save("ids.npy", np.arange(2))
    os.symlink("ids.npy", "alias.npy")
    with pytest.raises(UsageError, match=r"^run .* is also an input file") as raised:
        io.check_outputs({"output": "out.json", "run": output}, ["q.npy", "ids.npy", "qrels.tsv"])
    assert raised.value.for_command_line().startswith(f"--run {output} is also an input file")


def test_outputs_inside_an_input_dataset_are_refused(workdir):
    Path("parts").mkdir()
    Path("parts/part-0.parquet").write_bytes(b"PAR1")
    with pytest.raises(UsageError, match="would become a part of the input directory"):
        io.check_outputs({"per_sample": "parts/rows.parquet"}, ["parts"])
    with pytest.raises(UsageError, match="matches the input pattern"):
        io.check_outputs({"per_sample": "emb-9.parquet"}, ["emb-*.parquet"])
    io.check_outputs({"output": "parts/summary.json"}, ["parts"])


def test_where_an_output_cannot_go(workdir):
    Path("a_directory").mkdir()
    with pytest.raises(OutputError, match="^a_directory: is a directory; give a file name$"):
        io.check_outputs({"output": "a_directory"}, [])
    with pytest.raises(OutputError, match="^missing/out.json: directory 'missing' does not "
                                          "exist$"):
        io.check_outputs({"output": "missing/out.json"}, [])
    os.symlink("loop_b", "loop_a")
    os.symlink("loop_a", "loop_b")
    with pytest.raises(OutputError, match="^loop_a: symbolic link loop$"):
        io.check_outputs({"output": "loop_a"}, [])


@pytest.mark.skipif(ROOT_USER, reason="root writes anywhere")
def test_an_unwritable_directory_is_refused_before_the_run(workdir):
    Path("locked").mkdir(mode=0o500)
    with pytest.raises(OutputError, match=r"^locked/out.json: cannot write \(Permission "
                                          r"denied\)$"):
        io.check_outputs({"output": "locked/out.json"}, [])


def test_check_output_path_keeps_its_checks(workdir):
    np.save("q.npy", np.ones((2, 2), "f4"))
    with pytest.raises(UsageError, match="^q.npy is also an input file"):
        io.check_output_path("q.npy", ["q.npy"])
    with pytest.raises(OutputError, match="does not exist"):
        io.check_output_path("nowhere/x.json", [])


# ---------------------------------------------------------------- write_atomically


def _write(text: bytes):
    return lambda handle: handle.write(text)


def test_a_new_file_follows_the_umask_and_a_replaced_file_keeps_its_mode(workdir):
    old = os.umask(0o027)
    try:
        io.write_atomically("new.json", _write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("new.json").st_mode) == 0o640
    Path("kept.json").write_text("old")
    os.chmod("kept.json", 0o604)
    io.write_atomically("kept.json", _write(b"new"))
    assert Path("kept.json").read_text() == "new"
    assert stat.S_IMODE(os.stat("kept.json").st_mode) == 0o604
    assert _leftovers(workdir) == []


def test_a_symbolic_link_is_written_through(workdir):
    Path("real.json").write_text("old")
    os.symlink("real.json", "link.json")
    io.write_atomically("link.json", _write(b"new"))
    assert os.path.islink("link.json")
    assert Path("real.json").read_text() == "new"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(workdir):
    Path("out.json").write_text("old")

    def broken(handle):
        handle.write(b"half")
        raise ValueError("renderer bug")

    with pytest.raises(ValueError, match="renderer bug"):
        io.write_atomically("out.json", broken)
    assert Path("out.json").read_text() == "old"
    assert _leftovers(workdir) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_device_is_one_output_error():
    before = sorted(os.listdir("/dev"))
    with pytest.raises(OutputError) as raised:
        io.write_atomically("/dev/full", _write(b"x" * 100_000))
    assert str(raised.value) == "/dev/full: cannot write (No space left on device)"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # never renamed over
    assert sorted(os.listdir("/dev")) == before


def test_dev_null_is_written_directly():
    io.write_atomically("/dev/null", _write(b"x" * 1000))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_named_pipe_is_written_directly(workdir):
    os.mkfifo("out.pipe")
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(Path("out.pipe").read_bytes()))
    reader.start()
    io.write_atomically("out.pipe", _write(b"hello\n"))
    reader.join(10)
    assert received == [b"hello\n"]
    assert stat.S_ISFIFO(os.stat("out.pipe").st_mode)
    assert _leftovers(workdir) == []


def test_a_pipe_whose_reader_leaves_is_a_broken_pipe(workdir):
    os.mkfifo("out.pipe")

    def read_nothing() -> None:
        os.close(os.open("out.pipe", os.O_RDONLY))

    reader = threading.Thread(target=read_nothing)
    reader.start()
    with pytest.raises(OutputError, match=r"^out.pipe: cannot write \(Broken pipe\)$"):
        io.write_atomically("out.pipe", _write(b"x" * 2**20))
    reader.join(10)


def test_a_pipe_nobody_reads_says_what_it_waits_for(workdir, monkeypatch):
    notes: list[str] = []
    monkeypatch.setattr(io, "on_wait", notes.append)
    monkeypatch.setattr(io, "wait_notice_seconds", 0.05)
    os.mkfifo("out.pipe")
    timer = threading.Timer(0.5, lambda: Path("out.pipe").read_bytes())
    timer.start()
    io.write_atomically("out.pipe", _write(b"late"))
    timer.join(10)
    assert notes == ["waiting for a reader of out.pipe"]


_SUBPROCESS_WRITE = """
import resource, sys
from infonce_cli import io
from infonce_cli.errors import OutputError
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    io.write_atomically(sys.argv[1], lambda handle: handle.write(b"x" * 5000))
except OutputError as exc:
    print(exc)
"""


def test_a_file_too_large_is_one_output_error(workdir):
    result = subprocess.run([sys.executable, "-c", _SUBPROCESS_WRITE, "big.json"],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout == "big.json: cannot write (File too large)\n", result.stderr
    assert list(workdir.iterdir()) == []


def test_dev_stdout_writes_into_the_descriptor_the_shell_opened(workdir):
    """``>>`` appends: renaming a new file over stdout's target would lose what was there."""
    Path("log.txt").write_text("first\n")
    code = ("from infonce_cli import io\n"
            "io.write_atomically('/dev/stdout', lambda handle: handle.write(b'second\\n'))")
    with open("log.txt", "ab") as stdout:
        subprocess.run([sys.executable, "-c", code], stdout=stdout, timeout=60, check=True)
    assert Path("log.txt").read_text() == "first\nsecond\n"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_every_system_error_is_one_output_error(workdir, monkeypatch, code):
    """What the system refuses (even to root, on a read-only or full file system) is named
    by its reason; a temporary file that was made is removed."""
    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refused)
    with pytest.raises(OutputError, match=rf"^out.json: cannot write \({os.strerror(code)}\)$"):
        io.write_atomically("out.json", _write(b"{}"))
    monkeypatch.undo()
    with pytest.raises(OutputError, match=rf"^out.json: cannot write \({os.strerror(code)}\)$"):
        io.write_atomically("out.json", lambda handle: refused())
    assert list(workdir.iterdir()) == []


@pytest.mark.skipif(ROOT_USER, reason="root writes anywhere")
def test_a_read_only_file_is_not_replaced(workdir):
    Path("ro.json").write_text("old")
    os.chmod("ro.json", 0o444)
    with pytest.raises(OutputError, match=r"^ro.json: cannot write \(Permission denied\)$"):
        io.write_atomically("ro.json", _write(b"new"))
    assert Path("ro.json").read_text() == "old"


# ---------------------------------------------------------------- through the command


BASE = ["score", "-q", str(SAMPLE / "queries.npy"), "-p", str(SAMPLE / "positives.npy")]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_cli_output_to_a_full_device():
    result = CliRunner().invoke(app, [*BASE, "--output", "/dev/full", "--format", "json"])
    assert result.exit_code == ExitCode.DATA_ERROR
    assert result.stderr == "error: /dev/full: cannot write (No space left on device)\n"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_cli_outputs_to_dev_null_succeed():
    result = CliRunner().invoke(app, [*BASE, "--output", "/dev/null", "--format", "json",
                                      "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_cli_refuses_two_outputs_naming_one_file(workdir):
    result = CliRunner().invoke(app, [*BASE, "--output", "s.jsonl", "--per-sample",
                                      "./s.jsonl"])
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert result.stderr == "error: --per-sample and --output name the same file s.jsonl\n"
    assert list(workdir.iterdir()) == []


def test_cli_refuses_an_output_onto_an_id_file(workdir):
    np.save("ids.npy", np.arange(400))
    result = CliRunner().invoke(app, [*BASE, "--pos-ids", "ids.npy", "--output", "ids.npy"])
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert result.stderr.startswith("error: --output ids.npy is also an input file")
    assert np.load("ids.npy").tolist() == list(range(400))


def test_installed_command_writes_json_to_dev_stdout():
    result = subprocess.run([str(Path(sys.executable).parent / "infonce"), *BASE[0:1],
                             "-q", "sample_data/queries.npy", "-p", "sample_data/positives.npy",
                             "--output", "/dev/stdout", "--format", "json", "--quiet"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert '"loss"' in result.stdout


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    """Where writing is refused, the message says whether the file system is read-only or
    the permissions deny it (checked with a stand-in for os.statvfs: mounting needs
    privileges a test should not take)."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    target = str(tmp_path / "out.json")
    with pytest.raises(OutputError) as denied:
        io.check_output_path(target, [])
    assert str(denied.value) == f"{target}: cannot write (Permission denied)"

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(OutputError) as read_only:
        io.check_output_path(target, [])
    assert str(read_only.value) == f"{target}: cannot write (Read-only file system)"
