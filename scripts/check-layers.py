#!/usr/bin/env python3
"""The layering rules of src/, checked (CI runs this; exit 1 on a breach).

1. Every top-level module (src/<name>.rs or src/<name>/mod.rs) states in its
   module comment which other modules of the crate it may import, in a
   paragraph that starts `//! Imports:` and names them in backticks
   (`config`, `api`); "nothing of the crate" and "anything of the crate"
   are understood. A file deeper in a module may state its own; otherwise
   its module's statement holds for it.
2. What a file imports from outside its top-level module is within that
   statement. Test code (`#[cfg(test)] mod ... { }`) is not looked at.
3. No import cycle: neither between the top-level modules nor between files.

    scripts/check-layers.py [SRC]      (default: src)
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "src"
ROOT_FILES = ("lib.rs", "main.rs")


def module_path(rel):
    """src-relative file -> module path tuple (`api/mod.rs` -> ("api",))."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def without_tests(text):
    """The text without `#[cfg(test)] mod x { ... }` blocks."""
    out, pos = [], 0
    for found in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if found.start() < pos:
            continue
        out.append(text[pos:found.start()])
        depth, i = 1, found.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def flatten(path):
    """`a::{b, c::{d, e}}` -> [`a::b`, `a::c::d`, `a::c::e`]."""
    found = re.match(r"^(.*?)\{(.*)\}$", path, re.S)
    if not found:
        return [path]
    prefix, inner = found.group(1), found.group(2)
    items, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += (ch == "{") - (ch == "}")
        current += ch
    items.append(current)
    return [p for item in items if item.strip() for p in flatten(prefix + item.strip())]


def statement(text):
    """The modules a file's `//! Imports:` paragraph names, or None."""
    lines = [l[3:].strip() for l in text.splitlines() if l.startswith("//!")]
    for i, line in enumerate(lines):
        if line.startswith("Imports:"):
            para = [line]
            for more in lines[i + 1:]:
                if not more:
                    break
                para.append(more)
            words = " ".join(para)
            if "anything of the crate" in words:
                return {"*"}
            return {name.split("::")[0] for name in re.findall(r"`([\w:]+)`", words)}
    return None


files = {}
for folder, _, names in os.walk(SRC):
    for name in names:
        if name.endswith(".rs"):
            rel = os.path.relpath(os.path.join(folder, name), SRC)
            files[rel] = module_path(rel)
modules = {path: rel for rel, path in files.items()}
tops = {path[0] for path in modules if len(path) == 1}


def target(path):
    """The file a module path names (the longest known prefix)."""
    for n in range(len(path), 0, -1):
        if path[:n] in modules:
            return modules[path[:n]]
    return None


edges = {rel: set() for rel in files}
for rel, here in files.items():
    text = without_tests(open(os.path.join(SRC, rel), encoding="utf-8").read())
    text = re.sub(r"//[^\n]*", "", text)
    paths = []
    for found in re.finditer(r"\buse\s+((?:super::)+|crate::)([^;]+);", text):
        # `here` is the file's own module (a/b.rs and a/b/mod.rs alike):
        # each `super` is one step up from it.
        ups = found.group(1).count("super")
        base = list(here[: len(here) - ups])
        for item in flatten(re.sub(r"\s+", "", found.group(2))):
            paths.append(tuple(base) + tuple(s for s in item.split(" as ")[0].split("::") if s and s != "self"))
    for found in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
        paths.append(tuple(found.group(1).split("::")))
    for path in paths:
        file = target(path)
        if file and file != rel and not (files[file] == here[: len(files[file])]):
            edges[rel].add(file)

problems = []
stated = {}
for rel, here in files.items():
    text = open(os.path.join(SRC, rel), encoding="utf-8").read()
    stated[rel] = statement(text)
for rel, here in sorted(files.items()):
    if len(here) == 1 and here[0] in tops and stated[rel] is None:
        problems.append(f"{rel}: no `//! Imports:` paragraph in its module comment")

for rel, here in sorted(files.items()):
    if not here:
        continue  # lib.rs and main.rs assemble everything
    allowed = stated[rel]
    if allowed is None:
        allowed = stated.get(modules.get(here[:1], ""), None) or set()
    if "*" in allowed:
        continue
    for file in sorted(edges[rel]):
        other = files[file]
        if not other or other[0] == here[0]:
            continue
        if other[0] not in allowed:
            problems.append(f"{rel}: imports `{other[0]}` ({file}), which its module comment does not allow")

# Cycles: between files, and between top-level modules.
def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


for part in cycles(edges):
    problems.append("import cycle between files: " + " ".join(part))
top_graph = {}
for rel, targets in edges.items():
    if not files[rel]:
        continue
    for file in targets:
        if files[file] and files[file][0] != files[rel][0]:
            top_graph.setdefault(files[rel][0], set()).add(files[file][0])
for part in cycles(top_graph):
    problems.append("import cycle between modules: " + " ".join(part))

for problem in problems:
    print(problem)
checked = sum(1 for rel in files if files[rel])
print(f"check-layers: {checked} files, {len(tops)} modules, {len(problems)} problems")
sys.exit(1 if problems else 0)
