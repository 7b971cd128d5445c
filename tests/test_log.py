"""glmkit.log: progress as a bar on a terminal, as periodic lines in cluster logs, nothing with --quiet."""

from __future__ import annotations

import io
import logging
import re

import pytest

from conftest import TEST_DATA, run
from glmkit import log


@pytest.fixture
def captured(monkeypatch):
    """glmkit's logger set up as the CLI does, writing into a non-terminal buffer."""
    stream = io.StringIO()
    monkeypatch.setattr(log.sys, "stderr", stream)
    log.setup()
    yield stream
    log.setup()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_lines_at_a_steady_interval_with_rate_and_time_left(captured, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(log.time, "monotonic", clock)
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "30")
    with log.progress(total=1000, desc="embed", unit="proteins") as bar:
        for _ in range(10):
            clock.now += 10
            bar.update(25)  # 2.5 proteins/s
    lines = captured.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60 and 90 s
    assert lines[0] == "embed: 75 of 1,000 proteins (7.5 %), 2 proteins/s, 6 min 10 s left (30 s elapsed)"
    assert lines[2].startswith("embed: 225 of 1,000 proteins (22.5 %)") and "5 min 10 s left" in lines[2]


def test_unknown_total_and_base_pairs(captured, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(log.time, "monotonic", clock)
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "30")
    with log.progress(desc="call", unit="bp") as bar:
        clock.now += 40
        bar.update(3_000_000)
    assert captured.getvalue() == "call: 3.0 Mbp, 75.0 kbp/s (40 s elapsed)\n"


def test_resumed_work_is_not_counted_in_the_rate(captured, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(log.time, "monotonic", clock)
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "10")
    with log.progress(total=200, desc="pretrain", unit="steps", initial=100) as bar:
        clock.now += 10
        bar.update(10)
    assert captured.getvalue().startswith("pretrain: 110 of 200 steps (55.0 %), 1 steps/s, 1 min 30 s left")


def test_quiet_disabled_and_library_use_report_nothing(captured, monkeypatch):
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "0")
    with log.progress(total=5, desc="x", enabled=False) as bar:
        bar.update(5)
    log.setup(quiet=True)
    with log.progress(total=5, desc="x") as bar:
        bar.update(5)
    logging.getLogger("glmkit").setLevel(logging.NOTSET)  # a library caller that never configured logging
    with log.progress(total=5, desc="x") as bar:
        bar.update(5)
    assert captured.getvalue() == ""


def test_a_bar_on_a_real_terminal(tmp_path):
    """stderr on a pseudo-terminal: a tqdm bar (carriage returns, 100 %), with the log lines kept whole above it."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import subprocess
    import sys

    store = tmp_path / "el.zarr"
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", store, "-q").exit_code == 0
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "glmkit", "filter", str(store), "-o", str(tmp_path / "f.zarr")],
                            stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    text = b"".join(chunks).decode()
    assert "\rfilter: 100%" in text and "12/12 [" in text and "contigs/s" in text, text
    assert re.search(r"^filter: kept \d+ contigs", text.replace("\r", "\n"), re.M), text


@pytest.mark.parametrize("command", ["call", "filter"])
def test_commands_report_progress_off_a_terminal(tmp_path, monkeypatch, command):
    """Under Slurm or nohup (stderr a file), every long command prints progress lines; --quiet none."""
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "0")
    store = tmp_path / "el.zarr"
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", store, "-q").exit_code == 0
    args = ([TEST_DATA / "multi_contigs.fna"] if command == "call" else [store]) + ["-o", tmp_path / "out.zarr"]
    loud = run(command, *args)
    quiet = run(command, *args, "-q", "--force")
    assert re.search(rf"^{command}: .*/s", loud.stderr, re.M), loud.stderr
    assert quiet.stderr == ""


def test_model_commands_report_progress_off_a_terminal(tmp_path, monkeypatch, esm_checkpoint):
    monkeypatch.setenv("GLMKIT_PROGRESS_SECONDS", "0")
    store = tmp_path / "el.zarr"
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", store, "-q").exit_code == 0
    embed = run("embed", store, "-o", tmp_path / "emb.zarr", "-m", esm_checkpoint[0], "--chunk-rows", "64")
    assert re.search(r"^embed: \d+ of \d+ proteins \(.* %\), .* proteins/s, .* left", embed.stderr, re.M), embed.stderr
    pretrain = run("pretrain", store, "-e", tmp_path / "emb.zarr", "-o", tmp_path / "glm", "--preset", "tiny",
                   "--max-steps", "3", "--batch-size", "2", "--threads", "1")
    assert re.search(r"^pretrain: [123] of 3 steps", pretrain.stderr, re.M), pretrain.stderr
    context = run("contextualize", store, "-e", tmp_path / "emb.zarr", "-m", tmp_path / "glm", "-o",
                  tmp_path / "c.zarr", "--batch-size", "4", "--threads", "1")
    assert re.search(r"^contextualize: \d+ of \d+ genes", context.stderr, re.M), context.stderr
