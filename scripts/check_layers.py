#!/usr/bin/env python3
"""The C core's layers, checked (docs/ARCHITECTURE.md).

Sources/CProcord is in folders by layer, each calling only those below it:

    base  <-  wire  <-  io  <-  client, worker, server  <-  entry

- A file includes its own folder's header, a lower folder's, and the public
  headers (include/procord/, quoted or <>) of its own or lower folders, and
  uses the functions of those folders only. client, worker and server never
  reach into each other; the one edge between them is server -> worker,
  through the functions procord/worker.h declares (a server hands sessions
  to workers, and with dont_fork serves them on a thread of its own).
- A private header's inline functions and macros are its folder's code.
- No cycle between files: a file that calls a function of another is above
  it, never also below.

A public header belongs to the folder that defines its functions; a header
whose functions are defined in several folders is an error of its own (split
it), but for entry/'s, which may sit in any header. C is read as text:
functions are found where their definition starts a line with its return
type. Every failure names the file and line, and what to do.

Usage: check_layers.py [--root DIR] [--self-test] [--graph]
"""
import argparse
import os
import re
import shutil
import sys
import tempfile

RANK = {"base": 0, "wire": 1, "io": 2, "client": 3, "worker": 3, "server": 3, "entry": 4}
# Edges between folders of the same rank that the design allows: public functions only.
PUBLIC_ACROSS = {("server", "worker")}

INCLUDE = re.compile(r'^\s*#\s*include\s+(?:"([^"]+)"|<(procord/[^>]+)>)')
DEFINITION = re.compile(r"^(?!static\b|typedef\b|return\b|else\b|if\b|while\b|for\b|switch\b)[A-Za-z_][\w \t\*]*?\b([a-z_]\w*)\s*\(")
DECLARATION = re.compile(r"\b(procord_\w+)\s*\(")
IDENTIFIER = re.compile(r"(?<!->)(?<!\.)(?<![\w])([A-Za-z_]\w*)\b")


def strip_comments_and_strings(text):
    """The text with comments and string literals blanked, lines kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Core:
    def __init__(self, root):
        self.root = root
        self.sources = os.path.join(root, "Sources", "CProcord")
        self.public = os.path.join(root, "include", "procord")
        self.errors = []
        self.public_functions = {}  # public header -> the functions it declares
        self.files = {}  # relative path -> (folder, text without comments)
        for folder in sorted(os.listdir(self.sources)):
            path = os.path.join(self.sources, folder)
            if folder == "include" or not os.path.isdir(path) or os.path.islink(path):
                continue
            if folder not in RANK:
                self.errors.append(f"{path}: a folder the layers do not know (add it to scripts/check_layers.py)")
                continue
            for name in sorted(os.listdir(path)):
                if name.endswith((".c", ".h")):
                    with open(os.path.join(path, name), encoding="utf-8") as f:
                        raw = f.read()
                    self.files[f"{folder}/{name}"] = (folder, raw, strip_comments_and_strings(raw))
        for name in sorted(os.listdir(self.sources)):
            if name.endswith((".c", ".h")):
                self.errors.append(f"Sources/CProcord/{name}: a file outside the layer folders")

    def where(self, relative, line):
        return f"Sources/CProcord/{relative}:{line}"

    # ---- Who defines what ----

    def definitions(self):
        """Non-static function name -> file that defines it."""
        defined = {}
        for relative, (_, _, code) in self.files.items():
            if not relative.endswith(".c"):
                continue
            lines = code.split("\n")
            for i, line in enumerate(lines):
                m = DEFINITION.match(line)
                if not m:
                    continue
                # A definition's parameter list ends in `{` (here or within a few lines).
                rest = " ".join(lines[i:i + 6])
                after = rest[rest.find(m.group(1)):]
                depth, k = 0, after.find("(")
                while k < len(after):
                    depth += after[k] == "("
                    depth -= after[k] == ")"
                    if depth == 0:
                        break
                    k += 1
                if after[k + 1:].lstrip().startswith("{"):
                    defined[m.group(1)] = relative
        return defined

    def public_owners(self, defined):
        """include/procord/X.h -> the folder defining its functions (None: types only)."""
        owners = {}
        for name in sorted(os.listdir(self.public)):
            if not name.endswith(".h"):
                continue
            with open(os.path.join(self.public, name), encoding="utf-8") as f:
                code = strip_comments_and_strings(f.read())
            folders = {}
            for m in DECLARATION.finditer(code):
                if m.group(1) in defined:
                    folders.setdefault(defined[m.group(1)].split("/")[0], m.group(1))
            # entry/, above everything, may put its functions in any public header
            # (procord_worker_main beside the worker's options it takes).
            if len(folders) > 1 and "entry" in folders:
                del folders["entry"]
            if len(folders) > 1:
                said = ", ".join(f"{fn} in {folder}/" for folder, fn in sorted(folders.items()))
                self.errors.append(f"include/procord/{name}: declares functions of several layers ({said}): "
                                   "split it so that each public header belongs to one")
            owners[f"procord/{name}"] = min(folders, key=lambda f: RANK[f]) if folders else None
            self.public_functions[f"procord/{name}"] = {m.group(1) for m in DECLARATION.finditer(code)}
        return owners

    # ---- The rules ----

    def check_includes(self, owners):
        for relative, (folder, raw, _) in self.files.items():
            for number, line in enumerate(raw.split("\n"), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = m.group(1) or m.group(2)
                if target.startswith("procord/"):
                    if target not in owners:
                        self.errors.append(f"{self.where(relative, number)}: includes {target}, "
                                           "which is not a public header")
                        continue
                    owner = owners[target]
                    if owner is None or owner == folder or RANK[owner] < RANK[folder]:
                        continue
                    if (folder, owner) in PUBLIC_ACROSS:
                        continue
                    self.errors.append(f"{self.where(relative, number)}: {folder}/ includes {target}, "
                                       f"the public header of {owner}/, which is {self.relation(folder, owner)}")
                    continue
                parts = target.split("/")
                if len(parts) == 1:  # same folder, by name
                    parts = [folder, target]
                if len(parts) != 2 or f"{parts[0]}/{parts[1]}" not in self.files:
                    self.errors.append(f"{self.where(relative, number)}: includes \"{target}\", which is "
                                       "no header of the core (write \"folder/name.h\")")
                    continue
                owner = parts[0]
                if owner == folder or RANK[owner] < RANK[folder]:
                    continue
                self.errors.append(f"{self.where(relative, number)}: {folder}/ includes {target}, "
                                   f"a private header of {owner}/, which is {self.relation(folder, owner)}")

    @staticmethod
    def relation(folder, owner):
        if RANK[owner] > RANK[folder]:
            return ("above it (base <- wire <- io <- client, worker, server <- entry): move what both "
                    "need down, or have the upper one pass a hook")
        return ("beside it (client, worker and server never reach into each other): move what both "
                "need below them")

    def across_allowed(self, caller_folder, symbol, callee_folder):
        """server -> worker through the worker's public functions only."""
        return (caller_folder, callee_folder) in PUBLIC_ACROSS and symbol in self.public_functions.get(
            "procord/worker.h", set())

    def check_calls(self, defined):
        """Edges file -> file it calls; cycles and calls that go up or across.

        A private header's code (its static inline functions, its macros) is
        its folder's: what it calls must be below or beside it like a .c
        file's calls. It takes no part in the cycles between files."""
        edges, wrong = {}, set()
        for relative, (folder, _, code) in self.files.items():
            for number, line in enumerate(code.split("\n"), 1):
                for m in IDENTIFIER.finditer(line):
                    callee = defined.get(m.group(1))
                    if not callee or callee == relative:
                        continue
                    edges.setdefault(relative, {}).setdefault(callee, (number, m.group(1)))
        for caller, callees in sorted(edges.items()):
            for callee, (number, symbol) in sorted(callees.items()):
                a, b = caller.split("/")[0], callee.split("/")[0]
                if a == b or RANK[b] < RANK[a] or self.across_allowed(a, symbol, b):
                    continue
                wrong.add((caller, callee))
                self.errors.append(f"{self.where(caller, number)}: {a}/ uses {symbol} of {callee}, "
                                   f"which is {self.relation(a, b)}")
        file_edges = {f: {g: e for g, e in callees.items() if (f, g) not in wrong}
                      for f, callees in edges.items() if f.endswith(".c")}
        for cycle, component in cycles(file_edges):
            steps = []
            for i, f in enumerate(cycle):
                nxt = cycle[(i + 1) % len(cycle)]
                number, symbol = file_edges[f][nxt]
                steps.append(f"{self.where(f, number)} uses {symbol} of {nxt}")
            caught = f" (files caught in circles with them: {', '.join(component)})" if len(component) > len(cycle) else ""
            self.errors.append("a cycle between files: " + "; ".join(steps) + caught
                               + ": one of them must not know the other (a hook, or the shared part below both)")
        return file_edges

    def run(self):
        defined = self.definitions()
        owners = self.public_owners(defined)
        self.check_includes(owners)
        edges = self.check_calls(defined)
        return edges


def cycles(edges):
    """Strongly connected components of more than one file, each as a cycle through it."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append((shortest_cycle(edges, set(component)), sorted(component)))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(edges, component):
    """A shortest cycle inside a strongly connected component (breadth first from its first file)."""
    start = sorted(component)[0]
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w not in component:
                    continue
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return list(reversed(path))
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return sorted(component)


def check(root):
    core = Core(root)
    edges = core.run()
    return core, edges


def self_test(root):
    """The check, on a copy of the core with a wrong include and a cycle added: each must be named."""
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "tree")
        shutil.copytree(os.path.join(root, "Sources", "CProcord"), os.path.join(copy, "Sources", "CProcord"),
                        symlinks=True, ignore=shutil.ignore_patterns("include"))
        shutil.copytree(os.path.join(root, "include"), os.path.join(copy, "include"))
        before_planting = set(check(copy)[0].errors)

        def expect(what, edit, needle):
            nonlocal failures
            path, line = edit
            full = os.path.join(copy, "Sources", "CProcord", path)
            with open(full, encoding="utf-8") as f:
                before = f.read()
            with open(full, "a", encoding="utf-8") as f:
                f.write(line)
            core, _ = check(copy)
            planted = [e for e in core.errors if e not in before_planting]
            if not any(needle in e for e in planted):
                print(f"self-test: {what} was not reported (new errors: {planted})", file=sys.stderr)
                failures += 1
            with open(full, "w", encoding="utf-8") as f:
                f.write(before)

        expect("base/ including io/'s header", ("base/error.c", '\n#include "io/io_private.h"\n'),
               "base/error.c")
        expect("client/ including server/'s header", ("client/pool.c", '\n#include "server/server_private.h"\n'),
               "beside it")
        expect("wire/ including a public header of client/",
               ("wire/frame.c", '\n#include "procord/pool.h"\n'), "wire/frame.c")
        expect("wire/ including a public header of client/ with <>",
               ("wire/frame.c", '\n#include <procord/pool.h>\n'), "wire/frame.c")
        expect("a cycle inside io/",
               ("io/loop.c", "\nvoid procord_self_test_probe(void) { procord_connection_free(0); }\n"),
               "a cycle between files")
        expect("an inline function of io/'s header calling client/",
               ("io/io_private.h", "\nstatic inline int probe(void) { return procord_link_send(0, 0, 0, 0); }\n"),
               "io/io_private.h")
        expect("a macro of wire/'s header calling client/",
               ("wire/wire_private.h", "\n#define PROBE(x) procord_link_send((x), 0, 0, 0)\n"),
               "wire/wire_private.h")
        expect("server/ calling a function of worker/ that is not its public API",
               ("server/server_log.c",
                "\nint procord_worker_request_termination(void);\n"
                "void procord_self_test_probe(void) { procord_worker_request_termination(); }\n"),
               "server/server_log.c")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    parser.add_argument("--self-test", action="store_true",
                        help="check that a wrong include and a cycle are reported, on a copy")
    parser.add_argument("--graph", action="store_true", help="print the file graph")
    arguments = parser.parse_args()
    root = os.path.abspath(arguments.root)
    if arguments.self_test:
        failures = self_test(root)
        print(f"check_layers.py self-test: {failures} failures")
        return 1 if failures else 0
    core, edges = check(root)
    if arguments.graph:
        for caller, callees in sorted(edges.items()):
            print(caller, "->", " ".join(sorted(callees)))
    for error in core.errors:
        print(error, file=sys.stderr)
    if core.errors:
        print(f"C core layers: {len(core.errors)} violations (docs/ARCHITECTURE.md says the rule)", file=sys.stderr)
        return 1
    files = sum(1 for r in core.files if r.endswith(".c"))
    print(f"C core layers: {files} files in {len(set(f for f, _, _ in core.files.values()))} folders, "
          "every include and call goes down, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
