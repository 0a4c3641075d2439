#!/usr/bin/env python3
"""The dependency rules of docs/architecture.md, checked against the code.

Usage: check_deps.py REPO_ROOT

Reads the allowed edges from the fenced block tagged `dependencies` in docs/architecture.md
(one line per unit: `unit: other units it may use`), then fails (exit 1, one line per breach)
when:
  - a unit's block lists an unknown unit, or the allowed edges form a cycle;
  - a source file includes a header of a unit its own unit may not use;
  - a header named *_internal.h (or under a detail/ folder) is included from another unit;
  - a CMake target of a unit links a dvpn_* library of a unit it may not use;
  - a product folder (not tests/, bench/) holds code that belongs to no unit.
A unit is a folder; a file belongs to the unit with the longest matching folder. `services/*`
means each folder under services/. Generated protobuf headers (`dvpn/v1/...`) belong to proto.
"""

import os
import re
import sys

SOURCE_EXT = (".h", ".hpp", ".cpp", ".cc")
FREE = {"tests", "bench"}  # may use anything; checked for nothing but their own cycles


def read_rules(root):
    text = open(os.path.join(root, "docs/architecture.md"), encoding="utf-8").read()
    m = re.search(r"```dependencies\n(.*?)```", text, re.S)
    if not m:
        sys.exit("docs/architecture.md: no ```dependencies block")
    rules = {}
    for n, line in enumerate(m.group(1).splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        unit, _, deps = line.partition(":")
        rules[unit.strip()] = set(deps.split())
    return rules


def expand(rules, root):
    """services/* -> one unit per folder under services/, with the same rule."""
    out = {}
    for unit, deps in rules.items():
        if unit.endswith("/*"):
            base = unit[:-2]
            for d in sorted(os.listdir(os.path.join(root, base))):
                if os.path.isdir(os.path.join(root, base, d)):
                    out[f"{base}/{d}"] = set(deps)
        else:
            out[unit] = deps
    return out


def unit_of(path, units):
    best = None
    for u in units:
        if path == u or path.startswith(u + "/"):
            if best is None or len(u) > len(best):
                best = u
    return best


def tracked_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        top = rel.split(os.sep)[0]
        if rel != "." and (top.startswith(".") or top.startswith("build") or
                           top in ("docs", "docker", "packaging")):
            dirnames[:] = []
            continue
        for f in filenames:
            yield os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")


def find_cycle(graph):
    state = {}
    stack = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    rules = expand(read_rules(root), root)
    units = set(rules) | FREE
    errors = []
    for unit, deps in rules.items():
        for d in deps:
            if d != "*" and d not in units and not any(u.startswith(d + "/") for u in units):
                errors.append(f"docs/architecture.md: {unit} may use {d}: no such unit")
    # `a/*` in a rule: every unit under a/.
    def allowed(unit):
        out = set()
        for d in rules.get(unit, ()):
            if d == "*":
                out |= units - FREE
            elif d.endswith("/*"):
                out |= {u for u in units if u.startswith(d[:-1])}
            else:
                out.add(d)
        return out

    graph = {u: allowed(u) - {u} for u in rules}
    cycle = find_cycle(graph)
    if cycle:
        errors.append("docs/architecture.md: the allowed edges form a cycle: " + " -> ".join(cycle))

    include_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
    target_unit = {}
    links = []  # (cmake file, target, [libs])
    for path in tracked_files(root):
        unit = unit_of(path, units)
        name = os.path.basename(path)
        if path.endswith(SOURCE_EXT):
            if unit is None:
                if "/" in path:
                    errors.append(f"{path}: in no unit of docs/architecture.md")
                continue
            lines = open(os.path.join(root, path), encoding="utf-8", errors="replace")
            for n, line in enumerate(lines, 1):
                m = include_re.match(line)
                if not m:
                    continue
                inc = m.group(1)
                target = "proto" if inc.startswith("dvpn/v1/") else unit_of(inc, units)
                if target is None or target == unit or unit in FREE:
                    continue
                internal = inc.endswith("_internal.h") or "/detail/" in inc
                if internal:
                    errors.append(f"{path}:{n}: includes {inc}, internal to {target}")
                elif target not in allowed(unit):
                    errors.append(f"{path}:{n}: {unit} may not use {target} (includes {inc})")
        elif name == "CMakeLists.txt" and unit is not None:
            text = re.sub(r"#[^\n]*", "", open(os.path.join(root, path), encoding="utf-8").read())
            folder = os.path.dirname(path)
            for m in re.finditer(r"add_(?:library|executable)\(\s*([\w-]+)([^)]*)\)", text):
                # A target belongs to the unit of its first source (payments/CMakeLists.txt
                # builds dvpn_payments_wire from payments/wire/).
                sources = [w for w in m.group(2).split() if w.endswith(SOURCE_EXT)]
                first = os.path.normpath(os.path.join(folder, sources[0])) if sources else path
                target_unit[m.group(1)] = unit_of(first, units) or unit
            for m in re.finditer(r"target_link_libraries\(\s*([\w-]+)([^)]*)\)", text):
                libs = re.findall(r"\b(dvpn_\w+)", m.group(2))
                links.append((path, m.group(1), libs))
    for path, target, libs in links:
        unit = target_unit.get(target, unit_of(path, units))
        if unit in FREE:
            continue
        for lib in libs:
            lib_unit = target_unit.get(lib)
            if lib_unit is None:
                errors.append(f"{path}: {target} links {lib}, defined nowhere")
            elif lib_unit in FREE:
                errors.append(f"{path}: {target} ({unit}) links {lib} from {lib_unit}")
            elif lib_unit != unit and lib_unit not in allowed(unit):
                errors.append(f"{path}: {target} ({unit}) may not link {lib} ({lib_unit})")
    for e in errors:
        print(e)
    if errors:
        print(f"check_deps: {len(errors)} breach(es) of docs/architecture.md's dependencies")
        return 1
    print(f"check_deps: {len(rules)} units, {len(links)} link lists: every include and link "
          "within the rules, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
