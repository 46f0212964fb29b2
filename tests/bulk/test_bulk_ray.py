"""``portraitseg bulk`` on a real local Ray instance (2 CPUs, no dashboard, started once for the
module): the outputs and record are ``predict``'s byte for byte; bad files are reported and do
not stop the job; an actor killed mid-job (SIGKILL of its process) loses and duplicates nothing;
a driver killed mid-job leaves a run whose rerun skips the finished part."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, model_threads
from portraitseg.bulk import BulkSettings, FileJob, Resources, run
from portraitseg.cli import main
from portraitseg.commands.predict_record import RECORD_NAME, Record

RAY_MISSING = "ray is not installed: pip install 'portraitseg[ray]' (CI installs it)"
ray = pytest.importorskip("ray", reason=RAY_MISSING)
pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'portraitseg[ray]'")

ASSETS = sorted((REPO / "src" / "portraitseg" / "assets").glob("*.jpg"))
ALL_KINDS = ("mask", "cutout", "composite", "grid")
# Quiet and fast start: no usage-stats reporter (the rest is in ray.init below).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local Ray instance for the module (``bulk`` joins a running one); its address."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
                 logging_level="ERROR", _temp_dir=str(tmp_path_factory.mktemp("ray")))
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def files(folder: Path) -> dict[str, bytes]:
    """Every output file under ``folder`` (the record aside) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD_NAME}


def predict_args(inputs: list[str], out: Path, kinds: tuple[str, ...]) -> list[str]:
    args = [*inputs, "-o", str(out), "--no-progress"]
    for kind in kinds:
        args += ["--output", kind]
    return args


def error_lines(text: str, under: Path) -> set[str]:
    return {line for line in text.splitlines() if line.startswith(str(under))}


def test_outputs_are_predicts_and_bad_files_are_reported(ray_address: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy2(ASSETS[0], src)
    shutil.copy2(ASSETS[1], src / "sub")
    (src / "sub" / "broken.jpg").write_bytes(ASSETS[1].read_bytes()[:3000])  # a real photo cut short
    (src / "empty.png").write_bytes(b"")
    (src / "notes.webp").write_text("not an image")
    shutil.copy2(ASSETS[1], src / f"{ASSETS[0].stem}.png")  # same output names as ASSETS[0]
    args = predict_args([str(src)], tmp_path / "predict", ALL_KINDS) + ["--background", "#3366ff"]
    assert main(["predict", *args, "--threads", str(model_threads())]) == 1
    predicted = capsys.readouterr().err

    args = predict_args([str(src)], tmp_path / "bulk", ALL_KINDS) + ["--background", "#3366ff"]
    assert main(["bulk", *args]) == 1
    err = capsys.readouterr().err
    assert files(tmp_path / "bulk") == files(tmp_path / "predict")
    assert len(files(tmp_path / "bulk")) == 8  # 2 photos x 4 kinds, sub/ kept
    # The same record: output and input hashes and the same recipes (so each resumes the other).
    assert Record.load(tmp_path / "bulk").entries == Record.load(tmp_path / "predict").entries
    bad = error_lines(err, src)
    # The same lines as predict's (an output clash names the output, under the other -o).
    assert bad == error_lines(predicted.replace(str(tmp_path / "predict"), str(tmp_path / "bulk")), src)
    assert len(bad) == 4
    assert "2 image(s) done, 4 failed, 8 file(s) written" in err

    # The rerun: the finished photos are skipped (not recomputed), the bad files fail again.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "bulk").rglob("*.*")}
    assert main(["bulk", *args]) == 1
    err = capsys.readouterr().err
    assert "2 image(s) done, 4 failed, 0 file(s) written" in err and "(2 not recomputed)" in err
    assert error_lines(err, src) == bad
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "bulk").rglob("*.*")} == stamps


def test_threads_the_cluster_cannot_hold_are_one_line_not_a_wait(ray_address: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # On this 2-CPU cluster --threads 2 (and 4) waited forever for CPUs, printing nothing.
    args = predict_args([str(ASSETS[0])], tmp_path / "bulk", ("mask",))
    assert main(["bulk", *args, "--threads", "2", "--address", ray_address]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "portraitseg bulk: error: --threads 2: each actor needs that many CPUs on one node and the other "
        "stages at least one more; the Ray cluster has 2 CPUs (the largest node 2)")
    assert not list((tmp_path / "bulk").glob("*.png"))


def test_api_on_a_dataset_of_encoded_files(ray_address: str, tmp_path: Path) -> None:
    """Images held by Ray (as object storage would give them): read_binary_files -> segment."""
    from portraitseg import bulk

    src = tmp_path / "in"
    src.mkdir()
    for path in ASSETS:
        shutil.copy2(path, src)
    (src / "junk.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    inputs = [str(src / p.name) for p in ASSETS]
    assert main(["predict", *predict_args(inputs, tmp_path / "predict", ("mask",)),
                 "--threads", str(model_threads())]) == 0
    photos = ray.data.read_binary_files(str(src), include_paths=True)
    rows = bulk.segment(photos, kinds=("mask",), encoded=True).take_all()
    by_name = {Path(str(r["path"])).name: r for r in rows}
    assert sorted(by_name) == sorted([p.name for p in ASSETS] + ["junk.jpg"])
    for path in ASSETS:
        assert by_name[path.name]["error"] == ""
        assert by_name[path.name]["mask"] == (tmp_path / "predict" / f"{path.stem}.mask.png").read_bytes()
    junk = by_name["junk.jpg"]
    assert junk["error"].startswith(f"{junk['path']}: not a readable image") and junk["mask"] == b""


def test_real_photos_from_the_data_folder_are_predicts(ray_address: str, shared_data: Path,
                                                       tmp_path: Path) -> None:
    photos = []
    for name in ("vikram_val", "eg1800", "voc_person", "picsart_selfie"):
        photos += sorted((shared_data / name / "images").glob("*.jpg"))[:3]
    if not photos:
        pytest.skip(f"no images under {shared_data}")
    kinds = ("mask", "composite")
    inputs = [str(p) for p in photos]
    assert main(["predict", *predict_args(inputs, tmp_path / "predict", kinds),
                 "--threads", str(model_threads())]) == 0
    assert main(["bulk", *predict_args(inputs, tmp_path / "bulk", kinds), "--batch-size", "2"]) == 0
    assert files(tmp_path / "bulk") == files(tmp_path / "predict")
    assert len(files(tmp_path / "bulk")) == 2 * len(photos)


# --------------------------------------------------------------------------- kills

COPIES = 16
KILL_KINDS = ("mask",)
SCALE = 4  # 2048 px photos: an actor's image takes longer than a cold write task's start


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """in/: COPIES real photos (the samples at SCALE x) and predict's mask of each original by stem."""
    root = tmp_path_factory.mktemp("big")
    originals = root / "originals"
    originals.mkdir()
    for path in ASSETS:
        with Image.open(path) as im:
            im.resize((im.width * SCALE, im.height * SCALE), Image.Resampling.LANCZOS).save(
                originals / path.name, quality=95)
    assert main(["predict", *predict_args([str(originals)], root / "predicted", KILL_KINDS),
                 "--threads", str(model_threads())]) == 0
    expected = {p.stem: (root / "predicted" / f"{p.stem}.mask.png").read_bytes() for p in ASSETS}
    src = root / "in"
    src.mkdir()
    for i in range(COPIES):
        original = ASSETS[i % len(ASSETS)]
        shutil.copy2(originals / original.name, src / f"{i:02d}-{original.stem}.jpg")
    return src, expected


def check_outputs(src: Path, out: Path, expected: dict[str, bytes]) -> None:
    """Every input has exactly its mask, equal to predict's; nothing else is there."""
    want = {f"{p.stem}.mask.png": expected[p.stem.split("-", 1)[1]] for p in sorted(src.glob("*.jpg"))}
    assert files(out) == want  # no temporary file, no duplicate, nothing missing
    assert sorted(Record.load(out).entries) == sorted(want)


class ReadWatch:
    """Which inputs a job has read so far, from their access times: each is set far in the
    past, and the first read moves it to now (relatime updates an atime older than the
    mtime). The job reads an image only when it starts on it, so an unread input is work still
    to do: what makes a kill "mid-job" whatever the machine's speed."""

    def __init__(self, folder: Path) -> None:
        self.inputs = sorted(folder.glob("*.jpg"))
        for path in self.inputs:
            os.utime(path, (0, path.stat().st_mtime))
        probe = self.inputs[0]
        probe.read_bytes()
        if probe.stat().st_atime == 0:
            pytest.skip(f"{folder}: this file system does not record reads (noatime), so a kill cannot be "
                        "timed mid-job")
        os.utime(probe, (0, probe.stat().st_mtime))

    def read(self) -> int:
        return sum(p.stat().st_atime > 0 for p in self.inputs)


def segment_actor_pids() -> list[int]:
    """PIDs of this session's segmenting actors: processes titled ``ray::...SegmentActor...``
    whose parent, the raylet, is a child of this process (the module's Ray instance)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            grandparent = int((Path("/proc") / str(parent) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if title.startswith("ray::") and "SegmentActor" in title and grandparent == os.getpid():
            found.append(int(proc.name))
    return found


def wait_for(condition, what: str, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_an_actor_killed_mid_job_loses_and_duplicates_nothing(ray_address: str, big_photos,
                                                             tmp_path: Path) -> None:
    src, expected = big_photos
    watch = ReadWatch(src)
    killed: list[int] = []
    unread: list[int] = []
    earlier = set(segment_actor_pids())  # actors of earlier jobs may still be shutting down

    def kill_the_actor_at_its_third_image() -> None:
        # With one image per batch, the third read means two images are segmented.
        wait_for(lambda: watch.read() >= 3, "the third image read")
        pids = [pid for pid in segment_actor_pids() if pid not in earlier]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # a real kill: no clean-up runs in the actor
        killed.extend(pids)
        unread.append(COPIES - watch.read())

    killer = threading.Thread(target=kill_the_actor_at_its_third_image, daemon=True)
    killer.start()
    summary = run(FileJob([str(src)], tmp_path / "out", KILL_KINDS, progress=False), BulkSettings(),
                  Resources(actors=1, batch_size=1))
    killer.join(timeout=60)
    assert len(killed) == 1, f"expected one segmenting actor to kill, found {killed}"
    assert unread[0] >= 1, "the job read every image before the kill"
    assert (summary.done, summary.failed, summary.written) == (COPIES, 0, COPIES)
    by_pid = {int(worker.rsplit(":", 1)[1]): n for worker, n in summary.workers.items()}
    assert sum(by_pid.values()) == COPIES  # each image segmented (and counted) exactly once
    assert by_pid.get(killed[0], 0) >= 2, f"the killed actor's finished images are lost: {by_pid}"
    # Ray restarted the actor and redid the batch it was on; the unread images came after.
    after = sum(n for pid, n in by_pid.items() if pid != killed[0])
    assert after >= unread[0], f"{unread[0]} images were unread at the kill: {by_pid}"
    check_outputs(src, tmp_path / "out", expected)


def test_a_driver_killed_mid_job_is_finished_by_the_rerun(ray_address: str, big_photos,
                                                          tmp_path: Path) -> None:
    src, expected = big_photos
    watch = ReadWatch(src)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "portraitseg", "bulk", str(src), "-o", str(out), "--no-progress",
           "--address", ray_address, "--actors", "1", "--batch-size", "1"]
    for kind in KILL_KINDS:
        cmd += ["--output", kind]

    def finished_images() -> int:
        return len(Record.load(out).entries) if (out / RECORD_NAME).exists() else 0

    earlier = set(segment_actor_pids())  # actors of earlier jobs may still be shutting down
    driver = subprocess.Popen(cmd, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        # Kill when one image is finished (its outputs written and recorded) and some are not
        # even read yet: mid-job whatever the machine's speed.
        wait_for(lambda: finished_images() >= 1 or driver.poll() is not None, "the first finished image")
        driver.send_signal(signal.SIGKILL)  # the whole job's driver
        unread = COPIES - watch.read()
    finally:
        log = driver.communicate(timeout=60)[0]
    assert driver.returncode == -signal.SIGKILL, log
    assert unread >= 1, f"the driver read every image before the kill: {log}"
    wait_for(lambda: not set(segment_actor_pids()) - earlier, "Ray to stop the dead job's actor", timeout=120)
    before = finished_images()

    summary = run(FileJob([str(src)], out, KILL_KINDS, progress=False), BulkSettings(), Resources(actors=1))
    assert (summary.done, summary.failed) == (COPIES, 0)
    assert summary.skipped >= before  # every image finished before the rerun: not redone
    assert sum(summary.workers.values()) == COPIES - summary.skipped >= unread
    check_outputs(src, out, expected)


def test_a_full_disk_stops_the_job_in_one_line(ray_address: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A real 200 KB tmpfs: each of the 400 images after the disk filled was a line of its own
    # ('...: cannot write (No space left on device)'), as predict's were.
    from small_disk import tmpfs

    src = tmp_path / "in"
    src.mkdir()
    small = Image.open(ASSETS[0]).resize((160, 160))  # about 6 images' outputs fill the disk
    for i in range(40):
        small.rotate(i).save(src / f"p{i:02}.jpg")
    with tmpfs(tmp_path / "disk", size="200k") as disk:
        out = disk / "out"
        args = predict_args([str(src)], out, ("mask", "grid"))
        assert main(["bulk", *args, "--address", ray_address, "--batch-size", "2"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len([line for line in err if "No space left on device" in line]) == 1, err
        assert err[-1].startswith("stopped (the output folder cannot take more files) after "), err
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
        for path in out.glob("p*.*"):
            Image.open(path).load()  # whole files only
