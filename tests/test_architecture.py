"""Project-level contracts: engine never imports the UI (import-linter's contracts in
pyproject.toml, and a real import); README and CI agree."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_import_loads_no_ui_modules():
    mods = [
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for p in (ROOT / "engine").rglob("*.py")
        if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m.removesuffix('.__init__'))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'workbench')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_linter_contract():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = blocks[1].strip()
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_cli_help_lists_commands():
    r = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    for cmd in ("dataset", "evaluate"):
        assert cmd in r.stdout


def _import_cycles(package: str) -> list[list[str]]:
    """Strongly connected components (size > 1) of the package's module import graph."""
    import grimp

    graph = grimp.build_graph(package)
    mods = sorted(graph.modules)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules)
             for m in mods}  # fmt: skip
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan, iterative over successors via recursion depth of the graph (small)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in mods:
        if m not in index:
            visit(m)
    # A package's __init__ importing its own submodules is not a cycle a reader has to untangle.
    return [c for c in out if not all(x.startswith(c[0] + ".") or x == c[0] for x in c[1:])]


def test_no_import_cycles():
    cycles = _import_cycles("engine") + _import_cycles("workbench")
    assert not cycles, cycles


def test_modules_stay_small_or_say_why():
    """~500 lines is what a reader holds in their head; a longer module says why at its top."""
    long = []
    for pkg in ("engine", "workbench"):
        for py in (ROOT / pkg).rglob("*.py"):
            text = py.read_text()
            if text.count("\n") > 520 and "Stays whole:" not in text[:3000]:
                long.append(f"{py.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not long, long
