"""Bad input, internal errors, Ctrl-C and -o: each bad input exits 2 with one line naming what is
wrong and leaves nothing behind; a bug of scratchdiff exits 3 and says so, with its traceback in a
file; Ctrl-C exits 130 with one line; -o writes only regular files, whole or not at all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from differential import budget, output
from differential import report as report_module
from differential.cli import main
from differential.errors import InputError
from differential.weights import load_weights
from tests.foreign.adapter import TinyflowAdapter, make_adapter

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- damaged weight files: the file and what is wrong with it ---------------------------------

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npz_bytes(tmp_path: Path) -> bytes:
    np.savez(tmp_path / "good.npz", w=np.arange(1000.0))
    return (tmp_path / "good.npz").read_bytes()


BROKEN_FILES = {
    "empty.npz": (lambda tmp: b"", "is empty (0 bytes)"),
    "truncated.npz": (lambda tmp: _npz_bytes(tmp)[:300], "is not an npz archive"),
    "text.npz": (lambda tmp: b"name,value\nw,1\n", "is not an npz archive"),
    "members.npz": (lambda tmp: _zip(tmp / "m.zip", {"w.txt": b"1 2 3"}).read_bytes(), "member 'w.txt' is not a .npy"),
    "garbled.npz": (lambda tmp: _zip(tmp / "g.zip", {"w.npy": b"\x93NUMPY garbage"}).read_bytes(),
                    "member 'w.npy' is not a valid .npy array"),
    "empty.safetensors": (lambda tmp: b"", "is empty (0 bytes)"),
    "damaged.safetensors": (lambda tmp: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "not a readable safetensors"),
}


@pytest.mark.parametrize("name", BROKEN_FILES)
def test_a_damaged_weights_file_is_named_with_what_is_wrong(name: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    make, words = BROKEN_FILES[name]
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    with pytest.raises(InputError, match=re.escape(words)):
        load_weights(path)
    code, out, err = run(capsys, "report", "--weights", str(path))
    assert code == 2 and out == ""
    line = one_line(err)
    assert str(path) in line and words in line and "Traceback" not in err


def test_a_truncated_safetensors_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = tmp_path / "whole.safetensors"
    safetensors.numpy.save_file({"w": np.arange(1000.0)}, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:500])
    code, _, err = run(capsys, "report", "--weights", str(cut))
    assert code == 2 and str(cut) in one_line(err) and "not a readable safetensors file" in err


def test_a_missing_weights_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", "--weights", str(tmp_path / "nowhere.npz"))
    assert code == 2 and "nowhere.npz" in one_line(err) and "No such file" in err


# --- other bad input: one line naming the flag or value -----------------------------------------

FACTORY = '''
def make():
    raise RuntimeError("the GPU is on fire")
'''


def test_an_adapter_factory_that_raises_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my_raising_factory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run(capsys, "report", "--adapter", "my_raising_factory:make")
    assert code == 2 and out == ""
    assert "--adapter my_raising_factory:make" in one_line(err) and "RuntimeError: the GPU is on fire" in err


@pytest.mark.parametrize(("argv", "words"), [
    (["report", "--seed", "-1"], "--seed"),
    (["train", "--seed", "-1"], "--seed"),
    (["zoo", "--seed", "-1"], "--seed"),
    (["report", "--batch-size", "100000"], "--batch-size 100000"),
    (["report", "--layers", "100000"], "--layers 100000"),
    (["report", "--batch-size", "10000000", "--layers", "3"], "--batch-size 10000000 and --layers 3"),
])
def test_sizes_and_seeds_name_the_flag(argv: list[str], words: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(budget, "free_memory", lambda: 16e9)  # the same verdict on any machine
    monkeypatch.setattr(report_module, "run_report", _must_not_run)
    start = time.perf_counter()
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert words in line
    if "--seed" not in words:  # refused before any work, with the estimate
        assert "GB of memory" in line and "16 GB of memory is free" in line
        assert time.perf_counter() - start < 5


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the report ran although its input was refused")


def test_a_size_the_machine_holds_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(budget, "free_memory", lambda: 16e9)
    assert run(capsys, "report", "--batch-size", "64", "-q")[0] == 0


# --- internal errors and Ctrl-C -----------------------------------------------------------------

# A step of the report replaced by a builtin that raises: the error comes from no file of the user's
# (code of this test module would count as the user's, as an adapter's would).
INTERNAL = [({}.pop, "KeyError"), ([].index, "ValueError"), (len, "TypeError")]


@pytest.mark.parametrize(("broken", "name"), INTERNAL, ids=[n for _, n in INTERNAL])
def test_an_internal_error_exits_3_and_says_it_is_a_bug(broken: object, name: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report_module, "_checked_weights", broken)
    code, out, err = run(capsys, "report")
    assert code == 3 and out == ""
    line = one_line(err)
    assert "bug in scratchdiff" in line and name in line
    path = Path(line.rsplit("the traceback is in ", 1)[1])
    try:
        saved = path.read_text()
        assert saved.startswith("scratchdiff report\n") and "Traceback (most recent call last)" in saved
        assert name in saved.splitlines()[-1]
    finally:
        path.unlink()


class AdapterWithBrokenParameters(TinyflowAdapter):
    def named_parameters(self):  # noqa: ANN201 - the adapter protocol's signature
        raise RuntimeError("my parameter registry is empty")


def make_broken_parameters() -> AdapterWithBrokenParameters:
    return AdapterWithBrokenParameters(make_adapter().model)


def test_the_users_code_raising_during_the_run_is_their_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "report", "--adapter", "tests.differential.test_cli_errors:make_broken_parameters")
    assert code == 2 and out == ""
    line = one_line(err)
    assert "your code raised RuntimeError: my parameter registry is empty" in line
    assert "(at tests/differential/test_cli_errors.py:" in line


def test_ctrl_c_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "run_report", interrupted)
    code, out, err = run(capsys, "report")
    assert code == 130 and out == "" and one_line(err) == "scratchdiff: interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_in_a_real_process(delay: float) -> None:
    process = subprocess.Popen([str(Path(sys.executable).with_name("scratchdiff")), "report", "--layers", "4"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err == "scratchdiff: interrupted\n"


# --- -o: regular files only, written whole, nothing left behind ---------------------------------

def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_o_follows_a_symlink_to_its_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "real.json").write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    code, out, _ = run(capsys, "report", "--format", "json", "-o", str(link))
    assert code == 0 and out.startswith("scratchdiff: match")
    assert link.is_symlink() and (tmp_path / "real.json").read_text().startswith("{")
    assert _listing(tmp_path) == ["link.json", "real.json"]


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: os.mkfifo(p), "is a FIFO"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_o_refuses_what_is_not_a_regular_file(make, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target"
    make(target)
    monkeypatch.setattr(report_module, "run_report", _must_not_run)  # refused before any work
    code, out, err = run(capsys, "report", "-o", str(target))
    assert code == 2 and out == "" and words in one_line(err) and "-o" in err
    assert _listing(tmp_path) == ["target"]


def test_o_refuses_a_device(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report_module, "run_report", _must_not_run)
    code, _, err = run(capsys, "report", "-o", os.devnull)
    assert code == 2 and "is a character device" in one_line(err)
    assert Path(os.devnull).is_char_device()


def test_o_refuses_a_link_to_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sneaky").symlink_to(os.devnull)
    code, _, err = run(capsys, "report", "-o", str(tmp_path / "sneaky"))
    assert code == 2 and "a link to '/dev/null'" in one_line(err) and "character device" in err
    assert Path(os.devnull).is_char_device()


def test_o_in_a_missing_folder_is_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(report_module, "run_report", _must_not_run)
    code, _, err = run(capsys, "zoo", "-o", str(tmp_path / "no" / "such" / "zoo.txt"))
    assert code == 2 and "does not exist" in one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_o_in_a_read_only_folder_is_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    monkeypatch.setattr(report_module, "run_report", _must_not_run)
    code, _, err = run(capsys, "report", "-o", str(folder / "r.txt"))
    assert code == 2 and "permission denied" in one_line(err)


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.txt"
    target.write_text("the previous report")
    (tmp_path / ".report.txt.partial").write_text("another writer's file")  # the old fixed name: left alone

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output.os, "replace", full_disk)
    with pytest.raises(InputError, match="report.txt'.*No space left on device"):
        output.write_file(target, "new text")
    assert target.read_text() == "the previous report"
    assert _listing(tmp_path) == [".report.txt.partial", "report.txt"]


def test_ctrl_c_while_writing_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(output.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        output.write_file(tmp_path / "new.txt", "text")
    assert _listing(tmp_path) == []


def test_writes_use_unique_temporary_names_and_keep_the_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.txt"
    target.write_text("x")
    target.chmod(0o640)
    names = []
    real = os.replace

    def spy(src: str, dst: str) -> None:
        names.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(output.os, "replace", spy)
    output.write_file(target, "one")
    output.write_file(target, "two")
    assert target.read_text() == "two" and (target.stat().st_mode & 0o777) == 0o640
    assert len(set(names)) == 2 and all(n.startswith(".r.txt.") and n.endswith(".partial") for n in names)
    assert _listing(tmp_path) == ["r.txt"]


@pytest.mark.parametrize("bad", [["--weights", "empty.npz"], ["--seed", "-1"], ["--batch-size", "10000000"],
                                 ["--fault", "no_such_fault"]])
def test_bad_input_with_o_leaves_nothing_behind(bad: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(budget, "free_memory", lambda: 16e9)
    code, out, err = run(capsys, "report", *bad, "--format", "html", "-o", "report.html")
    assert code == 2 and out == "" and one_line(err)
    assert _listing(tmp_path) == ["empty.npz"]
