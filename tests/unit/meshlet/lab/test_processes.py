"""Telling our processes from strangers: the start time read from /proc."""

from __future__ import annotations

import os
import subprocess

from meshlet.lab.processes import Started, is_running, proc_starttime


def test_own_process_has_a_start_time() -> None:
    assert proc_starttime(os.getpid()) is not None


def test_reused_pid_is_not_ours() -> None:
    me = proc_starttime(os.getpid())
    assert me is not None
    assert is_running(Started(os.getpid(), me, (), ""))
    assert not is_running(Started(os.getpid(), me + 1, (), ""))


def test_exited_and_zombie_processes_are_not_running() -> None:
    proc = subprocess.Popen(["true"])
    # Until waited for, the exited child is a zombie: not running.
    while True:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
    assert proc_starttime(proc.pid) is None
    proc.wait()
    assert proc_starttime(proc.pid) is None
