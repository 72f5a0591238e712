#!/usr/bin/env python3
"""Runs a program as the reaper of every process it leaves behind.

    subreaper.py LIMIT PROGRAM [ARGUMENTS...]

This process becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER): a
process below it whose parent ends becomes its child, not init's. It starts
the program, then reaps children until waitpid says there are none left; then
nothing the program started runs any more (a living process has a living
parent below this one, so at least one child would remain). Past LIMIT
seconds every process below this one is stopped, then killed (again each
half second, should one escape).

Its last line on stdout is `subreaper: ` and a JSON object:
  status                   the program's exit code, or minus its signal
  seconds                  from the start to the program's end
  seconds_until_none_left  from the start to the end of the last process
  orphans                  processes whose parent ended first, reaped here
  killed                   processes killed because LIMIT passed
"""
import ctypes
import json
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def descendants(root):
    """Every process below `root`, from the parent ids in /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def main():
    limit = float(sys.argv[1])
    program = sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, "prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(error))

    # A signal blocked by whoever started us (a test runner's thread, say)
    # would hold back the alarm below.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    killed = set()

    def kill_everything(_signal, _frame):
        # Stopped first, until a pass finds none running: a stopped process
        # starts no other, so a runaway cannot outpace the kill.
        stopped = set()
        while True:
            running = set(descendants(os.getpid())) - stopped
            if not running:
                break
            for pid in running:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            stopped |= running
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        signal.setitimer(signal.ITIMER_REAL, 0.5)

    signal.signal(signal.SIGALRM, kill_everything)
    start = time.monotonic()
    # As from a shell: no signal blocked, none ignored (Python ignores SIGPIPE).
    defaults = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    child = os.posix_spawnp(program[0], program, os.environ, setsigmask=(), setsigdef=defaults)
    signal.setitimer(signal.ITIMER_REAL, limit)

    status, seconds, orphans = None, None, set()
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            status = os.waitstatus_to_exitcode(wait_status)
            seconds = time.monotonic() - start
        else:
            orphans.add(pid)
    seconds_until_none_left = time.monotonic() - start
    signal.setitimer(signal.ITIMER_REAL, 0)

    report = {
        "status": status,
        "seconds": seconds,
        "seconds_until_none_left": seconds_until_none_left,
        "orphans": len(orphans),
        "killed": len(killed),
    }
    print("subreaper: " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
