#!/usr/bin/env python3
"""Module import graph of a crate, or of one folder module inside it: which module (file or
folder) refers to which of its siblings via `crate::...` or `super::...`, and the cycles among
them. With --layers A,B,C (top first) it also reports every import from a lower sibling to a
higher one. Usage: modcycles.py [--layers A,B,...] DIR...

DIR is a crate's `src/` (its top-level modules are compared) or a folder module inside it
(`src/api`: the files and folders in it are compared). Extended from the lead's
/work/tools/modcycles.py, which checks crate roots only; on a crate root both report the same."""
import os, re, sys

def crate_root(d):
    d = os.path.abspath(d)
    r = d
    while True:
        if os.path.exists(os.path.join(r, 'main.rs')) or os.path.exists(os.path.join(r, 'lib.rs')):
            return r
        up = os.path.dirname(r)
        if up == r:
            sys.exit(f"{d}: no main.rs or lib.rs above it")
        r = up

def modules(src):
    """sibling name -> [(path, depth)]; depth = how many `super::` lead back to `src`'s module."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            parts = os.path.relpath(p, src)[:-3].split(os.sep)
            depth = len(parts)
            if parts[-1] == 'mod':
                parts, depth = parts[:-1], depth - 1
            if not parts or 'tests' in parts:
                continue  # the folder's own mod.rs is the parent; test modules may reach anywhere
            if parts in (['lib'], ['main']):
                continue
            mods.setdefault(parts[0], []).append((p, depth))
    return mods

def names_in(group):
    return re.findall(r'(?:^|,)\s*(\w+)', group)

def refs(paths, names, prefix):
    out = set()
    crate_pat = r'\bcrate::' + ''.join(re.escape(p) + '::' for p in prefix)
    for p, depth in paths:
        txt = open(p).read()
        txt = re.sub(r'//[^\n]*', '', txt)
        txt = re.split(r'#\[cfg\(test\)\]\s*mod tests\s*\{', txt)[0]
        sup = r'(?<!super::)\b' + 'super::' * depth if depth else None
        for pat in [crate_pat] + ([sup] if sup else []):
            for m in re.finditer(pat + r'(\w+)', txt):
                out.add(m.group(1))
            for m in re.finditer(r'use ' + pat.replace(r'\b', '') + r'\{([^}]*)\}', txt, re.S):
                out.update(names_in(m.group(1)))
    return {r for r in out if r in names}

def cycles(graph):
    idx, low, st, on, res, i = {}, {}, [], set(), [], [0]
    def sc(v):
        idx[v] = low[v] = i[0]; i[0] += 1; st.append(v); on.add(v)
        for w in graph[v]:
            if w not in idx:
                sc(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: res.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in idx: sc(v)
    return res

args = sys.argv[1:]
layers = []
if args[:1] == ['--layers']:
    layers = args[1].split(',')
    args = args[2:]
bad = 0
for src in args:
    root = crate_root(src)
    rel = os.path.relpath(os.path.abspath(src), root)
    prefix = [] if rel == '.' else rel.split(os.sep)
    mods = modules(src)
    graph = {m: refs(ps, mods, prefix) - {m} for m, ps in mods.items()}
    for c in cycles(graph):
        bad += 1
        print(f"{src}: import cycle: {' <-> '.join(c)}")
        for m in c:
            print(f"    {m} -> {', '.join(sorted(graph[m] & set(c)))}")
    if layers and set(layers) <= set(mods):
        for lo, m in enumerate(layers):
            up = sorted(w for w in graph[m] if w in layers and layers.index(w) < lo)
            if up:
                bad += 1
                print(f"{src}: upward import: {m} -> {', '.join(up)}")
print(f"{bad} problem(s)" if layers else f"{bad} cycle(s)")
sys.exit(1 if bad else 0)
