#!/usr/bin/env python3
"""The C test harness tested on itself (see check_self_test.c).

Runs the self-test program with a default limit of 2 s and checks, from the
outside, what a reader of a failing `make test-c` would rely on: each failure
(a hang on the main thread while the loop's thread runs, a hang past a
shorter limit of its own, a child left behind, a descriptor left open, a
failed CHECK with a worker still running, a crash) is reported under its own name and
not under the next test's; the hangs end within their limits; every test
after a failure still runs, with nothing of the failed one left; no process
started by the tests survives; the summary counts all of them; and a crash
after the last test ends the program instead of starting it over.

Usage: check_self_test.py PATH_TO_check_self_test
"""
import os
import re
import subprocess
import sys
import time

LIMIT = 2
EXPECTED_VERDICTS = [
    ("ok", "passes_before_the_others"),
    ("FAIL", "hangs_waiting_for_a_delegation_that_never_ends"),
    ("ok", "passes_after_the_hang"),
    ("FAIL", "hangs_past_its_own_shorter_limit"),
    ("FAIL", "leaves_a_child_behind"),
    ("ok", "passes_after_the_child"),
    ("FAIL", "leaves_a_descriptor_open"),
    ("FAIL", "fails_a_check_with_a_delegation_running"),
    ("FAIL", "crashes"),
    ("ok", "passes_after_the_crash"),
    ("ok", "passes_last_with_nothing_left_from_the_others"),
]


def fail(message, out="", err=""):
    print(f"harness self-test FAILED: {message}")
    if out or err:
        print("--- stdout\n" + out + "--- stderr\n" + err, end="")
    sys.exit(1)


def alive(pid):
    """True if `pid` is a process that has not been reaped (a zombie counts)."""
    return os.path.exists(f"/proc/{pid}")


def main():
    program = sys.argv[1]
    refused = subprocess.run([program], capture_output=True, text=True, timeout=30)
    if refused.returncode != 2 or "check_self_test.py" not in refused.stderr:
        fail("without PROCORD_CHECK_SELF_TEST=1 the program must run nothing and exit 2",
             refused.stdout, refused.stderr)

    env = dict(os.environ, PROCORD_CHECK_SELF_TEST="1", PROCORD_TEST_LIMIT=str(LIMIT))
    env.pop("PROCORD_TEST_RESUME", None)
    start = time.monotonic()
    run = subprocess.run([program], capture_output=True, text=True, env=env, timeout=60)
    took = time.monotonic() - start
    out, err = run.stdout, run.stderr

    verdicts = re.findall(r"^(ok|FAIL) +(\w+) \(", out, re.MULTILINE)
    if verdicts != EXPECTED_VERDICTS:
        fail(f"verdicts {verdicts}, expected {EXPECTED_VERDICTS}", out, err)
    passed = sum(1 for v, _ in EXPECTED_VERDICTS if v == "ok")
    failed = len(EXPECTED_VERDICTS) - passed
    if out.rstrip().splitlines()[-1] != f"{passed} passed, {failed} failed" or run.returncode != 1:
        fail(f"the last line must be '{passed} passed, {failed} failed' and the exit status 1 "
             f"(it is {run.returncode})", out, err)
    # The two hangs take their limits (2 s and 1 s); the rest is quick.
    if not LIMIT + 1 <= took < LIMIT + 1 + 10:
        fail(f"the run took {took:.1f} s; expected the limits ({LIMIT + 1} s) plus a little", out, err)

    expected_lines = [
        r"FAIL hangs_waiting_for_a_delegation_that_never_ends \(limit of 2 s\)",
        r"hangs_waiting_for_a_delegation_that_never_ends did not end within its limit of 2 s",
        r"hangs_waiting_for_a_delegation_that_never_ends left child process \d+ \((sleep|sh)\)",
        r"FAIL hangs_past_its_own_shorter_limit \(limit of 1 s\)",
        r"hangs_past_its_own_shorter_limit did not end within its limit of 1 s",
        r"leaves_a_child_behind left child process \d+ \((sleep|sh)\)",
        r"leaves_a_descriptor_open left descriptor \d+ \(/dev/null\) open",
        r"check_self_test.c:\d+: CHECK\(procord_delegation_is_finished\(d\)\) failed",
        r"fails_a_check_with_a_delegation_running left child process \d+ \((sleep|sh)\)",
        r"FAIL crashes \(crashed\)",
        r"crashes crashed: signal 11; going on with the next test",
    ]
    for pattern in expected_lines:
        if not re.search(pattern, out + err):
            fail(f"nothing matches /{pattern}/", out, err)
    # Nothing is blamed on a test that passed.
    for verdict, name in EXPECTED_VERDICTS:
        if verdict == "ok" and re.search(rf"{name} (left|did not end)", err):
            fail(f"{name} passed but was blamed for something", out, err)

    started = [int(p) for p in re.findall(r"started child (\d+)", err)]
    if len(started) != 4:
        fail(f"expected 4 children started, saw {started}", out, err)
    survivors = [pid for pid in started if alive(pid)]
    if survivors:
        fail(f"processes started by the tests are still there: {survivors}", out, err)
    # A crash after the last test (main's clean-up) ends the program, said
    # as such, instead of running the tests again and again.
    env_crash = dict(env, PROCORD_CHECK_SELF_TEST_CRASH_AFTER="1")
    try:
        crash = subprocess.run([program], capture_output=True, text=True, env=env_crash, timeout=20)
    except subprocess.TimeoutExpired:
        fail("a crash after the last test ran the program again and again")
    if (crash.returncode != 128 + 6 or "crashed outside any test" not in crash.stderr
            or crash.stdout.count("ok   passes_before_the_others") != 1):
        fail(f"a crash after the last test must end the program (status 134, it is {crash.returncode}) "
             "with 'crashed outside any test', the test run once", crash.stdout, crash.stderr)
    print(f"harness self-test: {len(EXPECTED_VERDICTS)} verdicts as expected in {took:.1f} s; "
          f"hangs stopped at their limits, leftovers blamed on their tests and ended")


if __name__ == "__main__":
    main()
