"""Issue 27, outputs: fer2neuro never destroys what is not its own. No write
replaces a device, a FIFO or a file the command reads; an export replaces a
folder only when it holds nothing fer2neuro did not write; symbolic links
are written through; one run per run folder; an unwritable output fails
before the work; long legal names stay legal; modes follow the umask.
(docs/reliability.md, "Outputs")"""
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro import atomic
from fer2neuro.atomic import atomic_folder, atomic_path, reading, remove_stale, write_text
from fer2neuro.cli import main
from fer2neuro.cli.base import output_dir
from fer2neuro.errors import ConfigError
from fer2neuro.lowering.lava_folder import MANIFEST_FILE, write_artifact
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.run_lock import LOCK_FILE, run_folder_lock
from cli_errors import one_line_error

ROOT = os.geteuid() == 0


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny_graph() -> nir.NIRGraph:
    """Input(4) -> Affine -> LIF(3) -> Output: enough for a Lava folder."""
    ones = np.ones(3)
    nodes = {"input": nir.Input(input_type=np.array([4])),
             "fc": nir.Affine(weight=np.full((3, 4), 0.6), bias=np.zeros(3)),
             "lif": nir.LIF(tau=2 * ones, r=ones, v_leak=0 * ones, v_threshold=ones),
             "output": nir.Output(output_type=np.array([3]))}
    meta = GraphInfo(dt=1.0, timesteps=4, encoder="poisson", class_names=("a", "b", "c")).to_metadata()
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], metadata=meta)


# -- devices, FIFOs, sockets ----------------------------------------------------------------------------------------

def _commands_writing(out, ckpt):
    """Every output option of every command, aimed at ``out``; ``ckpt`` exists
    but is no checkpoint: the refusal must come before it is read."""
    return [("export", ckpt, "--target", "nir", "--out", out),
            ("export", ckpt, "--target", "onnx", "--out", out),
            ("export", ckpt, "--target", "lava", "--out", out),
            ("simulate", ckpt, "--input", ckpt, "--out", out),
            ("verify", ckpt, "--report", out),
            ("verify", ckpt, "--markdown", out),
            ("verify", ckpt, "--plot", out),
            ("interop", ckpt, "--report", out),
            ("train", "--data", "synthetic", "--epochs", "1", "--limit", "8", "--out", out),
            ("finetune", ckpt, "--out", out),
            ("visualize", ckpt, "--out", out),
            ("predict", ckpt, "--model", ckpt, "--annotate", out)]


def _refused_everywhere(out, ckpt):
    for args in _commands_writing(out, ckpt):
        result = invoke(*args)
        one_line_error(result, str(out))
        assert "regular file" in result.output or "not a folder" in result.output, (args, result.output)


def test_no_command_writes_over_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not a checkpoint")
    _refused_everywhere(fifo, ckpt)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "x.pt"]


def test_no_command_writes_over_a_device(tmp_path):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not a checkpoint")
    if ROOT:
        # A device of our own first (the same as /dev/null: 1, 3): /dev/null
        # is aimed at only once the refusal is known to hold.
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        _refused_everywhere(device, ckpt)
        assert stat.S_ISCHR(os.lstat(device).st_mode)
    before = os.stat("/dev/null")
    for args in _commands_writing("/dev/null", ckpt)[:4]:
        one_line_error(invoke(*args), "/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_the_atomic_writers_refuse_a_fifo_or_a_socket_whoever_calls_them(tmp_path):
    import socket

    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        for name, kind in (("fifo", "FIFO"), ("sock", "socket")):
            with pytest.raises(ConfigError, match=kind):
                write_text(tmp_path / name, "x")
            (tmp_path / "link").symlink_to(tmp_path / name)     # through a link too
            with pytest.raises(ConfigError, match=kind):
                write_text(tmp_path / "link", "x")
            (tmp_path / "link").unlink()
    finally:
        sock.close()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode) and stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "sock"]


# -- the files the command reads ------------------------------------------------------------------------------------

def test_an_output_is_never_a_file_the_command_reads(tmp_path):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"the user's checkpoint")
    (tmp_path / "in.npy").write_bytes(b"the user's input")
    lava = tmp_path / "lava"
    write_artifact(tiny_graph(), lava)
    manifest = (lava / MANIFEST_FILE).read_bytes()
    cases = [(("export", ckpt, "--target", "nir", "--out", ckpt), "--out"),
             (("export", ckpt, "--target", "onnx", "--out", ckpt), "--out"),
             (("verify", ckpt, "--report", ckpt), "--report"),
             (("verify", ckpt, "--markdown", tmp_path / "." / "x.pt"), "--markdown"),   # another spelling
             (("simulate", tmp_path / "g.nir", "--input", tmp_path / "in.npy", "--out", tmp_path / "in.npy"), "--out"),
             (("verify", ckpt, "--lava", lava, "--report", lava / MANIFEST_FILE), "--report")]
    for args, option in cases:
        one_line_error(invoke(*args), option, "which this command reads")
    assert ckpt.read_bytes() == b"the user's checkpoint"
    assert (tmp_path / "in.npy").read_bytes() == b"the user's input"
    assert (lava / MANIFEST_FILE).read_bytes() == manifest
    # a hard link is the same file
    os.link(ckpt, tmp_path / "hard.pt")
    one_line_error(invoke("export", ckpt, "--target", "nir", "--out", tmp_path / "hard.pt"), "which this command reads")
    assert ckpt.read_bytes() == b"the user's checkpoint"


def test_the_atomic_writers_refuse_what_is_being_read(tmp_path):
    source = tmp_path / "images" / "a.png"
    source.parent.mkdir()
    source.write_bytes(b"photo")
    with reading([("IMAGE a.png", source)]):
        with pytest.raises(ConfigError, match="is the input IMAGE a.png, which this command reads"):
            write_text(source, "annotated")
        with pytest.raises(ConfigError, match="which this command reads"):       # nor a folder holding it
            with atomic_folder(source.parent, foreign=lambda folder: []) as staging:
                (staging / "x").write_text("x")
    assert source.read_bytes() == b"photo"
    write_text(source, "after the command")     # the registry ends with the command
    assert source.read_text() == "after the command"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


# -- export folders: only ours are replaced --------------------------------------------------------------------------

def test_a_lava_export_never_deletes_files_it_did_not_write(tmp_path):
    out = tmp_path / "lava"
    write_artifact(tiny_graph(), out)
    exported = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")
    (out / "results").mkdir()
    (out / "results" / "r.csv").write_text("1,2")
    with pytest.raises(ConfigError, match=r"holds files fer2neuro did not write \(notes.txt, results\)"):
        write_artifact(tiny_graph(), out)
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not a checkpoint")                   # refused before the checkpoint is read
    one_line_error(invoke("export", ckpt, "--target", "lava", "--out", out), "notes.txt", "choose another --out")
    assert (out / "notes.txt").read_text() == "mine" and (out / "results" / "r.csv").read_text() == "1,2"
    assert all((out / name).read_bytes() == data for name, data in exported.items())

    # a folder of ours, or an empty one, is replaced; nothing is left beside it
    (out / "notes.txt").unlink()
    (out / "results" / "r.csv").unlink()
    (out / "results").rmdir()
    write_artifact(tiny_graph(), out)
    (tmp_path / "empty").mkdir()
    write_artifact(tiny_graph(), tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "lava", "x.pt"]

    # the marker is our manifest: a foreign one makes nothing there ours
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / MANIFEST_FILE).write_text(json.dumps({"format": "someone.else"}))
    with pytest.raises(ConfigError, match="manifest.json"):
        write_artifact(tiny_graph(), foreign)
    assert json.loads((foreign / MANIFEST_FILE).read_text()) == {"format": "someone.else"}


def test_files_added_during_an_export_are_not_deleted(tmp_path):
    out = tmp_path / "lava"
    out.mkdir()
    with pytest.raises(ConfigError, match="late.txt"):
        with atomic_folder(out) as staging:
            (staging / "a").write_text("new")
            (out / "late.txt").write_text("written while the export ran")
    assert [p.name for p in out.iterdir()] == ["late.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lava"]              # the staging folder is gone


def test_a_symlinked_export_folder_is_written_through_keeping_the_link(tmp_path):
    real = tmp_path / "real"
    write_artifact(tiny_graph(), real)
    link = tmp_path / "link"
    link.symlink_to(real)
    (real / MANIFEST_FILE).write_text((real / MANIFEST_FILE).read_text().replace('"timesteps": 4', '"timesteps": 9'))
    write_artifact(tiny_graph(), link)                      # was: "Cannot call rmtree on a symbolic link"
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads((real / MANIFEST_FILE).read_text())["timesteps"] == 4      # the folder it names: new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    # a file through a link likewise: the file it names is replaced, the link stays
    (tmp_path / "target.txt").write_text("old")
    (tmp_path / "file-link").symlink_to(tmp_path / "target.txt")
    write_text(tmp_path / "file-link", "new")
    assert (tmp_path / "file-link").is_symlink() and (tmp_path / "target.txt").read_text() == "new"


# -- one run per run folder ------------------------------------------------------------------------------------------

def test_a_second_run_into_a_busy_run_folder_fails_at_once(tmp_path):
    run = tmp_path / "run"
    with run_folder_lock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        for args in (("train", "--data", "synthetic", "--epochs", "1", "--limit", "8", "--no-progress", "--out", run),
                     ("finetune", tmp_path / "none.pt", "--out", run)):
            one_line_error(invoke(*args), f"--out {run}", f"PID {os.getpid()}", "another fer2neuro run")
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]             # the refused runs wrote nothing
    assert not run.exists()                 # made for the run and left empty: removed, like the lock file


def test_the_run_lock_is_released_when_its_holder_is_killed(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom fer2neuro.run_lock import run_folder_lock\n"
                               f"with run_folder_lock({str(run)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"another fer2neuro run \\(PID {holder.pid}\\)"):
            with run_folder_lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folder_lock(run):              # the kernel dropped the dead holder's lock
        (run / "best.pt").write_text("x")
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]


# -- writability, before the work ------------------------------------------------------------------------------------

def test_an_unwritable_output_fails_before_the_work_even_for_root(tmp_path):
    """/sys takes no new files, whoever asks (root included)."""
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys")
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"not a checkpoint")           # read only after the check: a checkpoint error means too late
    for args in (("finetune", ckpt, "--out", "/sys/fer2neuro-test/run"),
                 ("export", ckpt, "--target", "nir", "--out", "/sys/fer2neuro-test.nir"),
                 ("verify", ckpt, "--report", "/sys/fer2neuro-test.json"),
                 ("train", "--data", "synthetic", "--epochs", "1", "--out", "/sys/fer2neuro-test")):
        one_line_error(invoke(*args), "cannot write in /sys")
    assert not os.path.exists("/sys/fer2neuro-test")


def test_a_read_only_folder_is_refused_before_the_work(tmp_path):
    """A folder mode 0555: as root (whom the mode does not stop, so
    ``os.access`` cannot tell) the check runs in a child that became nobody."""
    top = Path(tempfile.mkdtemp(dir="/tmp"))        # tmp_path's parents may be closed to nobody
    try:
        top.chmod(0o755)
        (top / "ro").mkdir(mode=0o555)
        (top / "ro").chmod(0o555)
        (top / "rw").mkdir()
        (top / "rw").chmod(0o777)

        def refused(folder) -> bool:
            try:
                output_dir(str(folder / "run"))
            except ConfigError as exc:
                assert "cannot write in" in str(exc) and "Permission denied" in str(exc)
                return True
            return False

        if not ROOT:
            assert refused(top / "ro") and not refused(top / "rw")
            return
        pid = os.fork()
        if pid == 0:                        # the child: nobody, then the checks; its status is the verdict
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                code = 0 if refused(top / "ro") and not refused(top / "rw") else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sorted(p.name for p in (top / "rw").iterdir()) == []          # the probe was removed
    finally:
        for sub in ("ro", "rw"):
            if (top / sub).exists():
                (top / sub).chmod(0o755)
                (top / sub).rmdir()
        top.rmdir()


# -- long names, modes -----------------------------------------------------------------------------------------------

def test_a_long_legal_name_stays_legal_and_its_leftovers_are_found(tmp_path):
    name = "a" * 240 + ".nir"                       # 244 bytes: legal (NAME_MAX 255)
    seen = []
    with atomic_path(tmp_path / name) as tmp:
        seen.append(tmp.name)
        tmp.write_text("x")
    assert (tmp_path / name).read_text() == "x"
    assert len(os.fsencode(seen[0])) <= 255 and atomic._TEMP.match(seen[0])
    # what a killed writer of that name left is stale, by name or by folder
    dead = seen[0].replace(f"-{os.getpid()}.", "-999999.")          # a PID no process has
    for target in (name, None):
        (tmp_path / dead).write_text("half")
        assert remove_stale(tmp_path, target) == [tmp_path / dead]
    # multi-byte names are cut between characters, and another long name gets another stem
    wide = "é" * 120 + ".json"                      # 245 bytes
    write_text(tmp_path / wide, "y")
    assert (tmp_path / wide).read_text() == "y"
    assert atomic._stem(wide) != atomic._stem(wide[1:]) and atomic._stem(wide).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, wide])


def test_export_to_a_244_character_name(checkpoint, tmp_path):
    out = tmp_path / ("m" * 240 + ".nir")
    result = invoke("export", checkpoint, "--target", "nir", "--out", out)
    assert result.exit_code == 0, result.output                # was "File name too long" for the temporary file
    assert out.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_predict_never_annotates_over_an_image_it_reads(checkpoint, tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8))
    before = (images / "a.png").read_bytes()
    result = invoke("predict", images, "--model", checkpoint, "--no-detect", "--annotate", images)
    one_line_error(result, f"--annotate {images / 'a.png'}", "which this command reads")
    assert (images / "a.png").read_bytes() == before and [p.name for p in images.iterdir()] == ["a.png"]


def test_results_take_their_modes_from_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_artifact(tiny_graph(), tmp_path / "lava")
        write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "lava").stat().st_mode) == 0o750      # was 0700 whatever the umask
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in (tmp_path / "lava").iterdir())
