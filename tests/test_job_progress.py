"""`python -m job sync` progress on stderr, in a real process: a line every few seconds when redirected, one line
redrawn in place on a terminal (a pseudo-terminal here), and JSON log lines never run into it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job.progress import ProgressLine, describe, duration
from job.state import ImportRecord
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import ROOT, job_config, make_order, order_keys, process_env

ORDERS_PAGE = r"^/test-project/orders$"
PROGRESS = re.compile(r"^orders: (\d+) of 12 \([\d.]+ %\), sent (\d+), skipped 0, failed 0, [\d,]+/s, "
                      r"(\d+[hms][\dms]*|time) left")
CLEAR = "\r\x1b[2K"


def sync_process(ct: FakeCommercetools, env: dict[str, str], page_seconds: float) -> tuple[list[str], dict[str, str]]:
    for n in range(1, 13):
        ct.add("orders", make_order(n))
    ct.fail_next("GET", ORDERS_PAGE, 200, delay=page_seconds, times=1000)
    return ([sys.executable, "-m", "job", "sync", "orders"],
            process_env(env, job_config(pageSize=1), LOG_LEVEL="INFO"))


def test_redirected_progress_is_a_line_every_few_seconds_and_never_joins_a_log_line(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, env: dict[str, str], tmp_path: Path) -> None:
    argv, process_env = sync_process(ct, env, page_seconds=0.5)  # 12 pages: 6 s and more
    with (tmp_path / "sync.log").open("w") as log:  # `> sync.log 2>&1`
        code = subprocess.run(argv, cwd=ROOT, env=process_env, stdout=log, stderr=log, timeout=120).returncode
    text = (tmp_path / "sync.log").read_text()

    assert code == 0, text[-2000:]
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    logs = [json.loads(line) for line in lines if line.startswith("{")]  # every log line is whole JSON
    assert {"import started or resumed", "import completed"} <= {entry["message"] for entry in logs}
    progress = [PROGRESS.match(line) for line in lines if line.startswith("orders:")]
    assert all(progress)
    # the first page at once, then one line per 5 s at most, and the end
    assert 2 <= len(progress) <= 4
    done = [int(match.group(1)) for match in progress]
    assert done == sorted(done) and done[0] < 12 and done[-1] == 12
    assert int(progress[-1].group(2)) == sum(len(order_keys(make_order(n))) for n in range(1, 13))
    table = lines[lines.index(next(line for line in lines if line.startswith("type "))):]
    assert table[1].split()[:3] == ["orders", "completed", "12"]


def test_on_a_terminal_the_progress_line_is_redrawn_in_place_and_cleared_for_log_lines(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, env: dict[str, str]) -> None:
    argv, process_env = sync_process(ct, env, page_seconds=0.25)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, cwd=ROOT, env=process_env, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(controller)
    text = b"".join(chunks).decode()

    assert process.returncode == 0, text[-2000:]
    draws = text.count(CLEAR + "orders:")
    assert draws >= 3  # redrawn in place, page after page
    lines = text.replace("\r\n", "\n").split("\n")
    # what each line finally shows once the terminal has cleared and redrawn it
    shown = [line.rsplit(CLEAR, 1)[-1] for line in lines]
    logs = [line for line in shown if "{" in line]
    assert len(logs) >= 2 and all(line.startswith("{") for line in logs)  # never after progress text
    for line in logs:
        json.loads(line)
    progress_lines = [line for line in shown if line.startswith("orders:")]
    assert len(progress_lines) == 1 and PROGRESS.match(progress_lines[0])  # one line, kept in place
    assert PROGRESS.match(progress_lines[0]).group(1) == "12"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal:
    """A stream that says it is a terminal, and keeps what is written."""

    def __init__(self, tty: bool) -> None:
        self.text, self.tty = "", tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty, every", [(True, 0.2), (False, 5.0)])
def test_progress_is_throttled_but_the_end_always_shows(tty: bool, every: float) -> None:
    clock, stream = FakeClock(), Terminal(tty)
    line = ProgressLine(stream, clock=clock)  # type: ignore[arg-type]
    assert line.every == every
    for step in range(10):
        clock.now = step * every / 2 * 1.001  # half the interval a step (a little more: no rounding doubt)
        line.show(f"step {step}")
    line.show("done", force=True)
    line.finish()

    shown = re.findall(r"step \d|done", stream.text)
    assert shown == ["step 0", "step 2", "step 4", "step 6", "step 8", "done"]
    assert stream.text.endswith("done\n")


def test_the_line_says_done_of_total_rate_and_time_left() -> None:
    record = ImportRecord(type="orders", status="running")
    record.counts.update(read=3_000, sent=12_000)

    assert describe(record, 10.0, 1_000, 10_000) == (
        "orders: 3,000 of 10,000 (30.0 %), sent 12,000, skipped 0, failed 0, 200/s, 35s left")
    assert describe(record, 10.0, 1_000, None).endswith("3,000 read, sent 12,000, skipped 0, failed 0, 200/s, "
                                                        "total unknown")
    assert [duration(s) for s in (5, 125, 7260)] == ["5s", "2m05s", "2h01m"]
