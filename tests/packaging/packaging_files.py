#!/usr/bin/env python3
"""Reads the packaging files for check_packaging.sh; prints one item per line.

  copy-sources DOCKERFILE      the sources of every COPY without --from (context-relative)
  copy-from-build DOCKERFILE   the sources of every COPY --from=build
  apt-packages DOCKERFILE      every package of every `apt-get install`
  executables FILE...          every word that names an executable: dvpnctl, dvpn-NAME
  flags FILE...                "BINARY<TAB>--flag" for every flag passed to one of ours, in
                               compose commands and health checks, shell scripts, a unit's
                               Exec*= lines and a Dockerfile's CMD/ENTRYPOINT
  help-subcommands HELP_FILE   the subcommand names a CLI11 --help lists
  schema CONFIG_CPP            "table<TAB>key" for every key of dvpn-node's config schema
  toml-keys TOML_FILE          "table<TAB>key" for every key set or shown commented out
  toml-rules TOML_FILE         "allow<TAB>RULE" / "deny<TAB>RULE" of [tunnel]
  compose COMPOSE_YAML         structural check: prints problems, exit 1 if any

Only the standard library is required; PyYAML is used when present.
"""

import json
import os
import re
import shlex
import sys

EXECUTABLE = re.compile(r"\b(dvpnctl|dvpn-[a-z]+(?:-[a-z]+)*)\b")
SEPARATORS = {";", "&&", "||", "|", "(", ")", "&", ";;"}


def logical_lines(text):
    """Lines with backslash continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def dockerfile_instructions(path):
    """(INSTRUCTION, rest) pairs, comments skipped."""
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if not l.lstrip().startswith("#")]
    for line in logical_lines("\n".join(lines)):
        parts = line.strip().split(None, 1)
        if parts:
            yield parts[0].upper(), parts[1] if len(parts) > 1 else ""


def words(text):
    """Shell words and operators of one logical line; a plain split if shlex gives up."""
    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        return list(lex)
    except ValueError:
        return text.split()


def segments(tokens):
    """Splits a token list at shell operators."""
    cur = []
    for t in tokens:
        if t in SEPARATORS or t.endswith("$"):  # "x=$" before "(": a command substitution
            if cur:
                yield cur
            cur = []
        else:
            cur.append(t)
    if cur:
        yield cur


def flags_of(tokens):
    """(binary, flag) for each --flag after one of our executables in a command's words."""
    binary = None
    for t in tokens:
        base = os.path.basename(t)
        if EXECUTABLE.fullmatch(base):
            binary = base
        elif binary and t.startswith("--") and len(t) > 2:
            yield binary, t.split("=", 1)[0]


def shell_commands(text):
    """Word lists of a shell script's commands (here-document bodies skipped)."""
    heredoc_end = None
    for line in logical_lines(text):
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if m:
            heredoc_end = m.group(1)
            line = line[: m.start()]
        for seg in segments(words(line)):
            yield seg


def compose_commands(text):
    """Word lists of compose commands, entrypoints and health-check tests (text-based)."""
    lines = text.splitlines()
    i = 0
    key = re.compile(r"^(\s*)(command|entrypoint|test):\s*(.*)$")
    while i < len(lines):
        m = key.match(lines[i])
        i += 1
        if not m:
            continue
        value = m.group(3).strip()
        if value.startswith("["):
            items = json.loads(value)
        elif value:
            items = words(value)
        else:
            items = []
            while i < len(lines) and re.match(r"^\s*-\s", lines[i]):
                item = re.sub(r"^\s*-\s+", "", lines[i]).strip()
                if item[:1] in "\"'" and item[-1:] == item[:1]:
                    item = item[1:-1]
                items.append(item)
                i += 1
        if items and items[0] in ("CMD", "CMD-SHELL"):
            items = items[1:]
        if len(items) >= 3 and items[0] in ("sh", "bash") and items[1] == "-c":
            yield from shell_commands(items[2])
        else:
            yield items


def cmd_flags(paths):
    for path in paths:
        with open(path) as f:
            text = f.read()
        name = os.path.basename(path)
        if name.endswith((".yaml", ".yml")):
            commands = compose_commands(text)
        elif name.endswith(".service"):
            commands = (
                words(l.split("=", 1)[1])
                for l in logical_lines(text)
                if re.match(r"^Exec\w*=", l)
            )
        elif name == "Dockerfile" or name.endswith(".Dockerfile"):
            commands = (
                json.loads(rest) if rest.startswith("[") else words(rest)
                for ins, rest in dockerfile_instructions(path)
                if ins in ("CMD", "ENTRYPOINT")
            )
        else:
            commands = shell_commands(text)
        for c in commands:
            for binary, flag in flags_of(c):
                print(f"{binary}\t{flag}")


def copy_sources(path, from_stage=None):
    """Sources of COPY/ADD from the context, or from stage `from_stage`."""
    for ins, rest in dockerfile_instructions(path):
        if ins not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        stage = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
        if stage != from_stage:
            continue
        args = [a for a in args if not a.startswith("--")]
        for src in args[:-1]:
            print(src)


def apt_packages(path):
    for ins, rest in dockerfile_instructions(path):
        if ins != "RUN":
            continue
        for seg in segments(words(rest)):
            while seg and re.fullmatch(r"\w+=.*", seg[0]):  # VAR=value apt-get ...
                seg = seg[1:]
            if len(seg) >= 2 and seg[0] == "apt-get" and "install" in seg:
                after = seg[seg.index("install") + 1 :]
                for t in after:
                    if not t.startswith("-"):
                        print(t)


def help_subcommands(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"^Subcommands:\n((?:  .*\n?)+)", text, re.M)
    if m:
        for line in m.group(1).splitlines():
            if re.match(r"^  \S", line):
                print(line.split()[0])


def schema(path):
    with open(path) as f:
        text = f.read()
    body = text[text.index("Schema()") :]
    body = body[: body.index("return schema")]
    for table, keys in re.findall(r'\{"(\w+)",\s*\{([^{}]*)\}\}', body):
        for k in re.findall(r'"(\w+)"', keys):
            print(f"{table}\t{k}")


def toml_keys(path):
    table = ""
    with open(path) as f:
        for line in f:
            m = re.match(r"^\s*\[(\w+)\]\s*$", line)
            if m:
                table = m.group(1)
                continue
            m = re.match(r"^\s*#?\s*(\w+)\s*=", line)
            if m and table:
                print(f"{table}\t{m.group(1)}")


def toml_rules(path):
    import tomllib  # Python 3.11 (Debian 12); the caller skips this on an older Python

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    tunnel = doc.get("tunnel", {})
    for action in ("allow", "deny"):
        for rule in tunnel.get(action, []):
            print(f"{action}\t{rule}")


def compose(path):
    """Valid YAML (with PyYAML) and the references between services hold."""
    problems = []
    with open(path) as f:
        text = f.read()
    if "\t" in text:
        problems.append("a tab character (YAML indents with spaces)")
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is None:
        # Minimal structure without PyYAML: top-level keys, services, anchors.
        top = re.findall(r"^([A-Za-z][\w-]*):", text, re.M)
        for k in top:
            if k not in ("services", "networks", "volumes", "configs", "secrets", "name") and not k.startswith("x-"):
                problems.append(f"unknown top-level key {k}")
        if "services" not in top:
            problems.append("no services")
        for alias in re.findall(r"\*(\w[\w-]*)", text):
            if not re.search(r"&" + re.escape(alias) + r"\b", text):
                problems.append(f"alias *{alias} without an anchor")
        print("compose: PyYAML not available; checked the structure only", file=sys.stderr)
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(f"not valid YAML: {e}")
            doc = None
        if isinstance(doc, dict):
            services = doc.get("services") or {}
            volumes = doc.get("volumes") or {}
            for name, svc in services.items():
                if not isinstance(svc, dict):
                    problems.append(f"service {name}: not a mapping")
                    continue
                if "image" not in svc and "build" not in svc:
                    problems.append(f"service {name}: neither image nor build")
                if "network_mode" in svc and "networks" in svc:
                    problems.append(f"service {name}: both network_mode and networks")
                nm = str(svc.get("network_mode", ""))
                if nm.startswith("service:") and nm[8:] not in services:
                    problems.append(f"service {name}: network_mode names no service {nm[8:]}")
                if "network_mode" in svc and "ports" in svc:
                    problems.append(f"service {name}: ports cannot be published with network_mode")
                deps = svc.get("depends_on") or {}
                for d in deps:
                    if d not in services:
                        problems.append(f"service {name}: depends on unknown service {d}")
                for v in svc.get("volumes") or []:
                    src = str(v).split(":", 1)[0]
                    if not src.startswith((".", "/")) and src not in volumes:
                        problems.append(f"service {name}: volume {src} not declared")
                cmd = svc.get("command")
                if cmd is not None and not isinstance(cmd, (list, str)):
                    problems.append(f"service {name}: command is neither a list nor a string")
        else:
            problems.append("not a mapping at the top level")
    for p in problems:
        print(p)
    return 1 if problems else 0


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    what, args = sys.argv[1], sys.argv[2:]
    if what == "copy-sources":
        copy_sources(args[0])
    elif what == "copy-from-build":
        copy_sources(args[0], "build")
    elif what == "apt-packages":
        apt_packages(args[0])
    elif what == "executables":
        for path in args:
            with open(path) as f:
                for word in sorted(set(EXECUTABLE.findall(f.read()))):
                    print(f"{word}\t{path}")
    elif what == "flags":
        cmd_flags(args)
    elif what == "help-subcommands":
        help_subcommands(args[0])
    elif what == "schema":
        schema(args[0])
    elif what == "toml-keys":
        toml_keys(args[0])
    elif what == "toml-rules":
        toml_rules(args[0])
    elif what == "compose":
        return compose(args[0])
    else:
        print(f"unknown request {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
