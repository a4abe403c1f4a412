"""A process and every process under it: what the supervisor measures and kills, found by
parentage, since torchrun starts each rank of a stage that trains in several processes in a
session (and process group) of its own, out of reach of a signal to a group."""

from __future__ import annotations

import signal

import psutil


def family(process: psutil.Process) -> list[psutil.Process]:
    """`process` and every process under it, however deep; none once it has exited."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_family(members: list[psutil.Process], sent: signal.Signals) -> None:
    """Send `sent` to each of `members` that is still there."""
    for member in members:
        try:
            member.send_signal(sent)
        except psutil.NoSuchProcess:
            continue
