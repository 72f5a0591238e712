#!/usr/bin/env python3
"""The C library as a C user gets it (run by `make test-library`).

Installs the library under a fresh prefix (`make install PREFIX=...`),
compiles Examples/c/minimal.c (and the loop examples on_libevent.c, on_poll.c)
in a directory outside the tree with nothing
but `pkg-config --cflags --libs procord`, and runs it as a main program that
delegates to itself and to a demo worker server; links it statically too
(libprocord.a, with `pkg-config --static`) and runs that; builds and runs
Examples/c/server_embedded.c (a server on the program's loop) both ways.
Then runs the examples that `make examples` built. First, that a build
without libevent's or OpenSSL's headers names the package to install. Each check is one test; the last line is
"N passed, N failed".
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f"\n    {detail}" if detail else ""))


def run(arguments, **options):
    """Runs a program to its end (60 s at most: then it is killed, and the
    result says so with return code None)."""
    try:
        return subprocess.run(arguments, capture_output=True, text=True, timeout=60, **options)
    except subprocess.TimeoutExpired as timeout:
        return subprocess.CompletedProcess(arguments, None, timeout.stdout or "",
                                           f"timed out after 60 s: {timeout.stderr or ''}")


class Server:
    """A worker server on an ephemeral port of 127.0.0.1, found from the
    READY=1 / STATUS message it sends on NOTIFY_SOCKET (sd_notify)."""

    def __init__(self, arguments, directory):
        path = os.path.join(directory, f"notify-{len(os.listdir(directory))}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(path)
        self.notify.settimeout(20)
        environment = dict(os.environ, NOTIFY_SOCKET=path)
        self.process = subprocess.Popen(arguments, env=environment, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.port = None
        self.log = ""
        try:
            message = self.notify.recv(4096).decode()
            for line in message.splitlines():
                if line.startswith("STATUS=listening on 127.0.0.1:"):
                    self.port = int(line.rsplit(":", 1)[1])
        except socket.timeout:
            pass

    def stop(self):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.notify.close()
            self.log = self.process.stderr.read()


def requirements_are_named_when_missing():
    """Without libevent's and OpenSSL's headers on the include path, the
    build says which packages to install (Sources/CProcord/base/requirements.c)."""
    with tempfile.TemporaryDirectory() as empty:
        compiled = run(["cc", "-std=c11", "-nostdinc", "-isystem", empty, "-fsyntax-only",
                        os.path.join(ROOT, "Sources/CProcord/base/requirements.c")])
        said = compiled.stderr
        check("a build without libevent's headers says: apt-get install libevent-dev",
              compiled.returncode != 0 and "apt-get install libevent-dev" in said, said[-2000:])
        check("a build without OpenSSL's headers says: apt-get install libssl-dev",
              compiled.returncode != 0 and "apt-get install libssl-dev" in said, said[-2000:])
    compiled = run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                    os.path.join(ROOT, "Sources/CProcord/base/requirements.c")])
    check("with them, the requirements check compiles without a word", compiled.returncode == 0 and
          compiled.stderr == "", compiled.stderr[-2000:])


def install_into_the_system_updates_the_loaders_cache():
    """The pkg-config file names no run path for /usr/local/lib and the like,
    so `make install` there runs ldconfig (programs failed to start without
    it); elsewhere the run path does the work. Read from the recipe, not run."""
    system = run(["make", "-n", "-s", "-C", ROOT, "install", "PREFIX=/usr/local"])
    private = run(["make", "-n", "-s", "-C", ROOT, "install", "PREFIX=/opt/procord-test"])
    check("make install into /usr/local runs ldconfig", "ldconfig" in system.stdout, system.stdout[-2000:])
    check("make install elsewhere does not", private.returncode == 0 and "ldconfig" not in private.stdout,
          private.stdout[-2000:])


def check_hosted_examples(directory, suffix):
    """on_libevent and on_poll (built in `directory`, named with `-suffix`)
    delegate on the program's own loop: every result, a refused input, exit 1."""
    name = (lambda example: f"{example}-{suffix}") if suffix else (lambda example: example)
    expected = ["fibo(10) = 89", "fibo(20) = 10946", "fibo(x) raised: fibo: the input must be a number from 0 to 90"]
    on_libevent = run([os.path.join(directory, name("on_libevent")), "10", "x", "20"])
    check(f"on_libevent ({suffix or 'in the tree'}): fibo on the program's libevent base", on_libevent.returncode == 1 and
          sorted(on_libevent.stdout.splitlines()) == expected and "timer ticked" in on_libevent.stderr,
          on_libevent.stdout + on_libevent.stderr)
    on_poll = run([os.path.join(directory, name("on_poll"))], input="10\nx\n20\n")
    check(f"on_poll ({suffix or 'in the tree'}): fibo for each line of stdin, from a poll() loop", on_poll.returncode == 1 and
          sorted(on_poll.stdout.splitlines()) == expected, on_poll.stdout + on_poll.stderr)


def embedded_server_served(result, expected):
    """server_embedded's output: where its server listened, the results
    `expected` (lines), the server stopped; exit status 0."""
    match = re.fullmatch(r"server listening on 127\.0\.0\.1:(\d+)\n(.*)server stopped\n", result.stdout, re.S)
    return (result.returncode == 0 and match is not None and int(match.group(1)) > 0 and
            match.group(2) == "".join(line + "\n" for line in expected))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", required=True, help="procord-demo, for its worker server")
    parser.add_argument("--examples", required=True, help="where `make examples` put the examples")
    options = parser.parse_args()
    requirements_are_named_when_missing()
    install_into_the_system_updates_the_loaders_cache()
    work = tempfile.mkdtemp(prefix="procord-library-test-")
    servers = []
    try:
        prefix = os.path.join(work, "prefix")
        installed = run(["make", "-s", "-C", ROOT, "install", f"PREFIX={prefix}"])
        check("make install PREFIX=... succeeds", installed.returncode == 0, installed.stderr[-2000:])
        for path in ["lib/libprocord.a", "lib/libprocord.so", "lib/libprocord.so.0",
                     "lib/pkgconfig/procord.pc", "include/procord/procord.h", "include/procord/pool.h",
                     "include/procord/version.h"]:
            check(f"installed {path}", os.path.exists(os.path.join(prefix, path)))

        environment = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
        flags = run(["pkg-config", "--cflags", "--libs", "procord"], env=environment)
        check("pkg-config --cflags --libs procord", flags.returncode == 0 and "-lprocord" in flags.stdout
              and f"-I{prefix}/include" in flags.stdout, flags.stdout + flags.stderr)

        # A C program outside the tree, compiled with pkg-config alone.
        outside = os.path.join(work, "program")
        os.makedirs(outside)
        for name in ["minimal.c", "server_embedded.c", "fibo_task.h"]:
            shutil.copy(os.path.join(ROOT, "Examples", "c", name), outside)
        compiled = run(["sh", "-c", "cc -std=c11 -Wall -Wextra -Werror minimal.c "
                        "$(pkg-config --cflags --libs procord) -o minimal"], cwd=outside, env=environment)
        check("an outside program compiles with pkg-config alone", compiled.returncode == 0,
              compiled.stderr[-2000:])
        program = os.path.join(outside, "minimal")
        linked = run(["ldd", program])
        check("it runs with the installed libprocord.so",
              f"{prefix}/lib/libprocord.so.0" in linked.stdout, linked.stdout)

        itself = run([program, "10", "20", "30"])
        check("it delegates to itself", itself.returncode == 0 and
              itself.stdout == "fibo(10) = 89\nfibo(20) = 10946\nfibo(30) = 1346269\n",
              itself.stdout + itself.stderr)

        # The static recipe of procord.pc.in and the README: libprocord.a and
        # its dependencies' archives, the C library alone shared.
        compiled = run(["sh", "-c", "cc -std=c11 -Wall -Wextra -Werror minimal.c $(pkg-config --cflags procord) "
                        "-Wl,-Bstatic $(pkg-config --static --libs procord) -Wl,-Bdynamic -o minimal-static"],
                       cwd=outside, env=environment)
        check("it links statically with pkg-config --static between -Bstatic and -Bdynamic",
              compiled.returncode == 0 and compiled.stderr == "", compiled.stderr[-2000:])
        static_program = os.path.join(outside, "minimal-static")
        linked = run(["ldd", static_program])
        check("the static program needs no libprocord, libevent or OpenSSL shared library",
              linked.returncode == 0 and "libc.so" in linked.stdout and
              not re.search(r"libprocord|libevent|libssl|libcrypto", linked.stdout), linked.stdout)
        itself = run([static_program, "10", "20"])
        check("the static program delegates to itself", itself.returncode == 0 and
              itself.stdout == "fibo(10) = 89\nfibo(20) = 10946\n", itself.stdout + itself.stderr)
        # A server embedded in a program, on its loop: built both ways too.
        for link, libraries in [("shared", "$(pkg-config --cflags --libs procord)"),
                                ("static", "$(pkg-config --cflags procord) -Wl,-Bstatic "
                                           "$(pkg-config --static --libs procord) -Wl,-Bdynamic")]:
            compiled = run(["sh", "-c", "cc -std=c11 -Wall -Wextra -Werror server_embedded.c "
                            f"{libraries} -o server_embedded-{link}"], cwd=outside, env=environment)
            check(f"server_embedded compiles with pkg-config ({link})",
                  compiled.returncode == 0 and compiled.stderr == "", compiled.stderr[-2000:])
            served = run([os.path.join(outside, f"server_embedded-{link}"), "10", "20"])
            check(f"server_embedded ({link}) serves its own delegations, then stops its server",
                  embedded_server_served(served, ["fibo(10) = 89", "fibo(20) = 10946"]),
                  served.stdout + served.stderr)

        versions = run(["sh", "-c", "pkg-config --modversion procord; grep -o 'define PROCORD_VERSION_[A-Z]* [0-9]*' "
                        f"{prefix}/include/procord/version.h"], env=environment)
        numbers = re.findall(r"PROCORD_VERSION_(?:MAJOR|MINOR|PATCH) (\d+)", versions.stdout)
        check("procord.pc's version is version.h's", versions.returncode == 0 and len(numbers) == 3 and
              versions.stdout.split("\n")[0] == ".".join(numbers), versions.stdout + versions.stderr)

        # The loop-integration examples, as a C user builds them: shared and static.
        for name in ["on_libevent.c", "on_poll.c"]:
            shutil.copy(os.path.join(ROOT, "Examples", "c", name), outside)
        for linking, recipe in [("shared", "$(pkg-config --cflags --libs procord libevent_core)"),
                                ("static", "$(pkg-config --cflags procord libevent_core) -Wl,-Bstatic "
                                           "$(pkg-config --static --libs procord libevent_core) -Wl,-Bdynamic")]:
            for example in ["on_libevent", "on_poll"]:
                binary = f"{example}-{linking}"
                compiled = run(["sh", "-c", f"cc -std=c11 -Wall -Wextra -Werror {example}.c {recipe} -o {binary}"],
                               cwd=outside, env=environment)
                check(f"{example}.c builds with pkg-config, {linking}", compiled.returncode == 0 and
                      compiled.stderr == "", compiled.stderr[-2000:])
            check_hosted_examples(outside, linking)

        demo_server = Server([options.demo, "--procord-server", "--procord-hostname", "127.0.0.1",
                              "--procord-port", "0"], work)
        servers.append(demo_server)
        check("a demo server starts", demo_server.port is not None)
        if demo_server.port:
            remote = run([program, "--procord-hostname", "127.0.0.1", "--procord-port",
                          str(demo_server.port), "10", "20"])
            check("it delegates to a demo server", remote.returncode == 0 and
                  remote.stdout == "fibo(10) = 89\nfibo(20) = 10946\n", remote.stdout + remote.stderr)
        check("the demo server stops cleanly", demo_server.stop() == 0)

        refused = run([program, "--procord-hostname", "127.0.0.1", "--procord-port",
                       str(demo_server.port or 1), "10"])
        check("a stopped server is a clear failure", refused.returncode == 1 and
              refused.stdout.startswith("fibo(10) failed: ") and
              f"could not connect to 127.0.0.1:{demo_server.port or 1}: ECONNREFUSED" in refused.stdout,
              refused.stdout)

        # The examples `make examples` built against the tree's library.
        examples = options.examples
        minimal = run([os.path.join(examples, "minimal"), "5", "x"])
        check("minimal reports a refused input", minimal.returncode == 1 and minimal.stdout ==
              "fibo(5) = 8\nfibo(x) raised: fibo: the input must be a number from 0 to 90\n", minimal.stdout)
        recursive = run([os.path.join(examples, "recursive"), "8"])
        check("recursive: workers that delegate to workers", recursive.returncode == 0 and
              recursive.stdout == "rfibo(8) = 34\n", recursive.stdout + recursive.stderr)
        check_hosted_examples(examples, "")
        embedded = run([os.path.join(examples, "server_embedded"), "12", "13"])
        check("server_embedded: a server on the program's loop serves its delegations, then stops",
              embedded_server_served(embedded, ["fibo(12) = 233", "fibo(13) = 377"]),
              embedded.stdout + embedded.stderr)
        embedded = run([os.path.join(examples, "server_embedded")])
        check("server_embedded without arguments delegates fibo(20)",
              embedded_server_served(embedded, ["fibo(20) = 10946"]), embedded.stdout + embedded.stderr)
        c_server = Server([os.path.join(examples, "server"), "0"], work)
        servers.append(c_server)
        check("the server example starts", c_server.port is not None)
        if c_server.port:
            served = run([os.path.join(examples, "minimal"), "--procord-hostname", "127.0.0.1",
                          "--procord-port", str(c_server.port), "12", "13"])
            check("the server example serves fibo", served.returncode == 0 and
                  served.stdout == "fibo(12) = 233\nfibo(13) = 377\n", served.stdout + served.stderr)
        check("the server example stops cleanly on SIGTERM", c_server.stop() == 0)
        check("the server example prints its figures", re.search(r"server: answered 2 tasks on [12] connections; refused 0, "
                                                    r"timed out 0", c_server.log), c_server.log)
    finally:
        for server in servers:  # a check that failed early must not leave one running
            if server.process.poll() is None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
