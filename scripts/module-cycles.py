#!/usr/bin/env python3
"""Counts module import cycles per crate: a module (file) depends on another module of
the same crate when it names it through `crate::a::b`, `super::x` or `self::x`
paths (use statements and inline paths). Reports strongly connected components with
more than one module (each counts as one cycle) and the largest .rs files."""
import os, re, sys
from collections import defaultdict

root = sys.argv[1]
crates = [d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, 'Cargo.toml')) and os.path.isdir(os.path.join(root, d, 'src'))]

def modpath(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    if parts and parts[0] == 'bin':
        return None
    return tuple(parts)

def strip_comments(text):
    text = re.sub(r'//[^\n]*', '', text)
    return re.sub(r'/\*.*?\*/', '', text, flags=re.S)

def strip_tests(text):
    # drop `#[cfg(test)] mod tests { ... }` blocks
    out = []
    i = 0
    while True:
        m = re.search(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', text[i:])
        if not m:
            out.append(text[i:]); break
        start = i + m.start(); out.append(text[i:start])
        j = i + m.end(); depth = 1
        while j < len(text) and depth:
            if text[j] == '{': depth += 1
            elif text[j] == '}': depth -= 1
            j += 1
        i = j
    return ''.join(out)

total = 0
for crate in sorted(crates):
    src = os.path.join(root, crate, 'src')
    mods = {}
    for dp, dn, fn in os.walk(src):
        for f in fn:
            if f.endswith('.rs'):
                p = os.path.join(dp, f)
                m = modpath(src, p)
                if m is not None:
                    mods[m] = p
    edges = defaultdict(set)
    for m, p in mods.items():
        text = strip_tests(strip_comments(open(p).read()))
        refs = set()
        # expand `use crate::{a, b::c}` groups crudely
        for g in re.finditer(r'crate::\{([^}]*)\}', text):
            for item in g.group(1).split(','):
                item = item.strip()
                if item:
                    refs.add(tuple(re.findall(r'[A-Za-z_]\w*', item.split(' as ')[0])))
        for r in re.finditer(r'crate((?:::[A-Za-z_]\w*)+)', text):
            refs.add(tuple(r.group(1).strip(':').split('::')))
        is_dir_mod = os.path.basename(p) in ('mod.rs', 'lib.rs', 'main.rs')
        self_mod = m
        super_mod = m[:-1]
        for r in re.finditer(r'\b(super|self)((?:::[A-Za-z_]\w*)+)', text):
            kw, rest = r.group(1), r.group(2).strip(':').split('::')
            prefix = self_mod if kw == 'self' else super_mod
            refs.add(tuple(prefix) + tuple(rest))
        # plain `mod x;` children are not dependencies; sibling paths like `foo::bar` in
        # a parent module that declares `mod foo` are child references.
        for r in re.finditer(r'(?<![:\w])([a-z_]\w*)::[A-Za-z_]', text):
            child = m + (r.group(1),)
            if child in mods:
                refs.add(child)
        for ref in refs:
            # longest prefix that is a module
            for k in range(len(ref), 0, -1):
                if ref[:k] in mods:
                    t = ref[:k]
                    related = t[:len(m)] == m or m[:len(t)] == t
                    if t != m and t != () and not related:
                        edges[m].add(t)
                    break
    # Tarjan SCC
    index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            sccs.append(comp)
    for v in list(mods):
        if v not in index:
            strong(v)
    cyc = [s for s in sccs if len(s) > 1]
    total += len(cyc)
    for s in cyc:
        print(f"{crate}: cycle: " + " <-> ".join('::'.join(x) or 'lib' for x in sorted(s)))
print("module cycles:", total)
sizes = []
for dp, dn, fn in os.walk(root):
    if '/target' in dp or '/.git' in dp:
        continue
    for f in fn:
        if f.endswith('.rs'):
            p = os.path.join(dp, f)
            sizes.append((sum(1 for _ in open(p)), os.path.relpath(p, root)))
sizes.sort(reverse=True)
for n, p in sizes[:int(os.environ.get('TOP', '8'))]:
    print(f"{n:6} {p}")
