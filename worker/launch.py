"""A trainer run in several processes for a stage: `python -m torch.distributed.run
--nproc-per-node N -m worker.training.<trainer> ...` as a child command of the stage's process.

A stage trains in-process when the worker trains in one process (`ALIGNLOOP_TRAIN_PROCESSES`).
With more, the trainer's command line (a flag per setting of its config) runs under torchrun in
a session of its own. The stage follows it
through its rank 0's stdout: each step's values on a line (`--step-lines`), then its report.
When the stage must stop (a cancel, a lost lease: `should_go_on` raises), the command is asked
to stop (SIGTERM) and killed after `STOP_GRACE_S`; when a rank fails, torchrun ends the others
and the stage fails with the end of the command's stderr. The stage's own process is still the
supervised child of `worker.isolation`: the ranks count towards its memory, and are killed with
it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

import psutil

from app.config import Settings
from worker.process_tree import family, signal_family
from worker.training.cli import PHASE_LINE, STEP_LINE

POLL_S = 0.5
STOP_GRACE_S = 3.0
"""How long the command has to stop when asked before it is killed (within isolation's 5 s)."""
ERROR_LINES = 20
"""The end of the command's stderr that a failure shows."""


class LaunchError(Exception):
    """The command ended without success; the message says how and ends with its stderr."""


def train_processes(settings: Settings) -> int:
    """The processes a stage trains in: the setting, or one per visible GPU (one without)."""
    if settings.train_processes:
        return settings.train_processes
    import torch

    return max(1, torch.cuda.device_count())


def trainer_command(
    trainer: str, processes: int, inputs: dict[str, Path], config: Any
) -> list[str]:
    """The torchrun command line of `python -m worker.training.<trainer>` with `inputs`
    (`{"data": file, "base": folder, "out": folder}`) and a flag per setting of `config`."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    command += [f"--master-port={_free_port()}", "-m", f"worker.training.{trainer}"]
    for name, path in inputs.items():
        command += [f"--{name.replace('_', '-')}", str(path)]
    for field in fields(config):
        command += _flag(field.name, getattr(config, field.name))
    return [*command, "--step-lines"]


def _flag(name: str, value: Any) -> list[str]:
    """The flag of one setting, as `worker.training.cli.parse_settings` reads it."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, "none" if value is None else str(value)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_trainer(
    command: list[str],
    *,
    on_step: Callable[[dict[str, Any]], None],
    should_go_on: Callable[[], None],
    on_phase: Callable[[dict[str, Any]], None] = lambda point: None,
) -> dict[str, Any]:
    """Run `command`, calling `on_step` with each step's values, `on_phase` with each point
    of a phase before the steps (`{"what", "done", "total"}`) and `should_go_on` at least every
    `POLL_S`; the report it prints last. Whatever any raises stops the command first."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            handlers = {STEP_LINE: on_step, PHASE_LINE: on_phase}
            report = _follow(process, handlers, should_go_on)
        finally:
            _stop(process)
        if process.returncode != 0:
            raise LaunchError(_failure(process.returncode, stderr))
    return json.loads(report)


def _follow(
    process: subprocess.Popen,
    handlers: dict[str, Callable[[dict[str, Any]], None]],
    should_go_on: Callable[[], None],
) -> str:
    """Hand the JSON of each line that starts with a prefix of `handlers` to its handler until
    stdout closes; the other lines, joined."""
    report = []
    for line in _lines(process.stdout, should_go_on):
        prefix = next((prefix for prefix in handlers if line.startswith(prefix)), None)
        if prefix is None:
            report.append(line)
        else:
            handlers[prefix](json.loads(line[len(prefix) :]))
    process.wait()
    return "".join(report)


def _lines(stream: IO[str], should_go_on: Callable[[], None]) -> Iterator[str]:
    """The lines of `stream` as they come, calling `should_go_on` while none does."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        should_go_on()
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def _stop(process: subprocess.Popen) -> None:
    """End the command and every rank, if any still runs: SIGTERM, then SIGKILL. The ranks
    are found by parentage before the signal (torchrun starts each in a session of its own)."""
    if process.poll() is not None:
        return
    members = family(psutil.Process(process.pid))
    signal_family(members, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=STOP_GRACE_S)
    signal_family(alive, signal.SIGKILL)
    process.wait()


def _failure(returncode: int, stderr: IO[bytes]) -> str:
    stderr.seek(0)
    tail = stderr.read().decode(errors="replace").strip().splitlines()[-ERROR_LINES:]
    return f"the trainer's processes ended with exit code {returncode}:\n" + "\n".join(tail)
