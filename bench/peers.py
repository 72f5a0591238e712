#!/usr/bin/env python3
"""Measure Python's own process pools, for comparison with Procord.

`procord-bench` runs this script and prints its figures next to Procord's.
It measures the two tools Python users reach for instead of Procord,
`concurrent.futures.ProcessPoolExecutor` and `multiprocessing.Pool`, in the
same three scenarios as Procord's benchmark:

- rtt: one worker, trivial tasks submitted one at a time, each waited for
  before the next; p50/p99/p999 latency in microseconds (nearest rank).
- throughput: W workers, T trivial tasks each submitted individually (no
  chunking, since Procord sends each task on its own), then all waited for;
  tasks per second from the first submit to the last result.
- payload: one worker echoes a bytes object of each size; median GB/s,
  counting the bytes both ways (2 * size / seconds / 1e9).

Pools use the platform's default start method, which the output records.
Standard library only; Python 3.9 or later.

Usage:
    bench/peers.py                  # full run, readable table
    bench/peers.py --quick --json   # a few seconds, one JSON document on stdout
    bench/peers.py --help           # all options

Progress goes to stderr. On error: a message on stderr and exit status 1.
"""

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

PEERS = ("ProcessPoolExecutor", "multiprocessing.Pool")
SCENARIOS = ("rtt", "throughput", "payload")
KIB, MIB = 1024, 1024 * 1024
FULL = {"rtt": 2000, "rtt_warmup": 200, "throughput": 20000,
        "sizes": [KIB, MIB, 64 * MIB, 256 * MIB]}
QUICK = {"rtt": 100, "rtt_warmup": 20, "throughput": 500,
         "sizes": [KIB, MIB], "repeats": 3}


class BenchError(Exception):
    """A failure the benchmark reports as a message and exit status 1."""


def increment(n):
    """The trivial task: runs in a worker."""
    return n + 1


def echo(b):
    """The payload task: returns its argument, so it travels both ways."""
    return b


@contextlib.contextmanager
def open_pool(peer, workers, context):
    """Start a pool of `peer` with `workers` processes and yield submit(fn, arg).

    submit returns a zero-argument function that waits for the task's result,
    so the scenarios read the same for both peers. The pool is shut down
    gracefully on success; on error the with-blocks tear it down.
    """
    if peer == "ProcessPoolExecutor":
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            yield lambda fn, arg: pool.submit(fn, arg).result
    else:
        with context.Pool(processes=workers) as pool:
            yield lambda fn, arg: pool.apply_async(fn, (arg,)).get
            pool.close()  # Pool.__exit__ only terminates; close and join instead
            pool.join()


def percentile(sorted_values, p):
    """Nearest-rank percentile p (0 < p <= 100) of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def check_increment(result, n):
    """Raise BenchError unless result is increment(n)."""
    if result != n + 1:
        raise BenchError(f"increment({n}) returned {result!r}")


def run_rtt(peer, context, tasks, warmup):
    """Latency of one task at a time through a single worker."""
    with open_pool(peer, 1, context) as submit:
        for i in range(warmup):
            check_increment(submit(increment, i)(), i)
        samples = []
        for i in range(tasks):
            start = time.perf_counter_ns()
            result = submit(increment, i)()
            samples.append(time.perf_counter_ns() - start)
            check_increment(result, i)
    samples.sort()
    return {"p50_us": round(percentile(samples, 50) / 1e3, 1),
            "p99_us": round(percentile(samples, 99) / 1e3, 1),
            "p999_us": round(percentile(samples, 99.9) / 1e3, 1),
            "tasks": tasks}


def run_throughput(peer, context, tasks, workers):
    """Tasks per second with every task submitted at once to `workers`."""
    with open_pool(peer, workers, context) as submit:
        for i in range(workers * 2):  # start every worker before timing
            check_increment(submit(increment, i)(), i)
        start = time.perf_counter()
        waits = [submit(increment, i) for i in range(tasks)]
        results = [wait() for wait in waits]
        elapsed = time.perf_counter() - start
    for i, result in enumerate(results):
        check_increment(result, i)
    return {"tasks_per_s": round(tasks / elapsed), "tasks": tasks,
            "workers": workers}


def check_echo(sent, received):
    """Raise BenchError unless received matches sent in length and samples."""
    if not isinstance(received, bytes) or len(received) != len(sent):
        raise BenchError(f"echo of {len(sent)} bytes came back wrong "
                         f"({type(received).__name__}, "
                         f"{len(received) if hasattr(received, '__len__') else '?'} long)")
    step = max(1, len(sent) // 64)
    for offset in range(0, len(sent), step):
        if received[offset:offset + 64] != sent[offset:offset + 64]:
            raise BenchError(f"echo of {len(sent)} bytes differs at {offset}")


def default_repeats(size):
    """Timed repeats for a payload size: fewer for the big, slow ones."""
    if size <= MIB:
        return 20
    return 2 if size <= 64 * MIB else 1


def run_payload(peer, context, sizes, repeats):
    """Median echo bandwidth through a single worker, for each size."""
    figures = {}
    with open_pool(peer, 1, context) as submit:
        for size in sizes:
            began = time.perf_counter()
            count = repeats or default_repeats(size)
            payload = os.urandom(size)
            check_echo(payload, submit(echo, payload)())  # warm-up
            seconds = []
            for _ in range(count):
                start = time.perf_counter()
                received = submit(echo, payload)()
                seconds.append(time.perf_counter() - start)
                check_echo(payload, received)
                del received
            del payload
            gbps = 2 * size / statistics.median(seconds) / 1e9
            figures[str(size)] = {"gb_per_s": round(gbps, 3), "repeats": count}
            print(f"peers.py: {peer}: payload {format_size(size)} took "
                  f"{time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return figures


def run(options, context):
    """Run the requested scenarios for the requested peers; return the report."""
    report = {"python": ".".join(map(str, sys.version_info[:3])),
              "start_method": context.get_start_method(),
              "workers": options.workers, "peers": {}}
    for peer in options.peers:
        figures = report["peers"][peer] = {}
        for scenario in options.scenarios:
            print(f"peers.py: {peer}: {scenario}...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            if scenario == "rtt":
                figures["rtt"] = run_rtt(peer, context, options.rtt_tasks,
                                         options.rtt_warmup)
            elif scenario == "throughput":
                figures["throughput"] = run_throughput(
                    peer, context, options.throughput_tasks, options.workers)
            else:
                figures["payload"] = run_payload(peer, context,
                                                 options.payload_sizes,
                                                 options.repeats)
            print(f"peers.py: {peer}: {scenario} took "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return report


def format_size(size):
    """1024 -> '1 KiB', 1048576 -> '1 MiB', others in bytes."""
    for unit, name in ((MIB, "MiB"), (KIB, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def print_table(report):
    """Print the report as a readable table on stdout."""
    print(f"Python {report['python']}, start method {report['start_method']}")
    for peer, figures in report["peers"].items():
        print(f"\n{peer}")
        if "rtt" in figures:
            r = figures["rtt"]
            print(f"  rtt         p50 {r['p50_us']} us, p99 {r['p99_us']} us, "
                  f"p999 {r['p999_us']} us ({r['tasks']} tasks)")
        if "throughput" in figures:
            t = figures["throughput"]
            print(f"  throughput  {t['tasks_per_s']} tasks/s "
                  f"({t['tasks']} tasks, {t['workers']} workers)")
        for size, p in figures.get("payload", {}).items():
            print(f"  payload     {format_size(int(size)):>8}: "
                  f"{p['gb_per_s']} GB/s ({p['repeats']} repeats)")


class Parser(argparse.ArgumentParser):
    """ArgumentParser that exits with status 1, like every other error here."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def name_list(choices):
    """Argument type: a comma-separated list of names from `choices`."""
    def parse(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}")
        return names
    return parse


def positive_int(text):
    """Argument type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def size_list(text):
    """Argument type: a comma-separated list of positive byte counts."""
    return [positive_int(part.strip()) for part in text.split(",")]


def parse_options(argv):
    """Parse the command line; --quick sets defaults that explicit options override."""
    parser = Parser(prog="peers.py", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout")
    parser.add_argument("--quick", action="store_true",
                        help="small counts that finish in a few seconds")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="workers for throughput (default: CPU count)")
    parser.add_argument("--rtt-tasks", type=positive_int,
                        help=f"recorded rtt tasks (default {FULL['rtt']})")
    parser.add_argument("--throughput-tasks", type=positive_int,
                        help=f"throughput tasks (default {FULL['throughput']})")
    parser.add_argument("--payload-sizes", type=size_list,
                        help="comma-separated sizes in bytes "
                             "(default 1 KiB, 1 MiB, 64 MiB, 256 MiB)")
    parser.add_argument("--scenarios", type=name_list(SCENARIOS), default=list(SCENARIOS),
                        help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--peers", type=name_list(PEERS), default=list(PEERS),
                        help="comma-separated subset of " + ",".join(PEERS))
    options = parser.parse_args(argv)
    base = QUICK if options.quick else FULL
    options.rtt_tasks = options.rtt_tasks or base["rtt"]
    options.rtt_warmup = base["rtt_warmup"]
    options.throughput_tasks = options.throughput_tasks or base["throughput"]
    options.payload_sizes = options.payload_sizes or base["sizes"]
    options.repeats = base.get("repeats")  # None: by size, see default_repeats
    return options


def main(argv=None):
    """Run the benchmark; return the exit status."""
    options = parse_options(argv)
    try:
        report = run(options, multiprocessing.get_context())
    except Exception as error:  # any failure is the benchmark's failure
        print(f"peers.py: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if options.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
