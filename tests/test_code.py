"""The code keeps the shape a reader is promised: backpack.py alone, in the paper's order, in at
most 420 lines; flat scripts of about 400 lines; imports that go one way, each job in one module;
lines of at most 100 characters (nanoGPT's files are so, but for 3% of their lines)."""

import ast
import glob
import os

from conftest import REPO

SCRIPT_LINES = 450  # the most lines of a script or module (the guide: "not much over 400")
BACKPACK_LINES = 420  # backpack.py, read in one sitting
LINE_LENGTH = 100


def python_files():
    """Every .py file of the project that git would hold: the scripts, tests, configs, assets."""
    return sorted(f for pattern in ("*.py", "tests/*.py", "config/*.py", "assets/*.py")
                  for f in glob.glob(os.path.join(REPO, pattern)))


def test_no_line_is_longer_than_100_characters():
    long = [f"{os.path.relpath(path, REPO)}:{n} ({len(line)} characters)"
            for path in python_files()
            for n, line in enumerate(open(path, encoding="utf-8").read().split("\n"), 1)
            if len(line) > LINE_LENGTH]
    assert not long, "lines over 100 characters: " + ", ".join(long)


def test_backpack_py_reads_in_one_sitting_and_no_script_grows_past_450_lines():
    lines = {os.path.basename(path): len(open(path, encoding="utf-8").read().splitlines())
             for path in glob.glob(os.path.join(REPO, "*.py"))}
    assert lines["backpack.py"] <= BACKPACK_LINES
    assert not {name: n for name, n in lines.items() if n > SCRIPT_LINES}


def project_imports():
    """{module: the project's modules it imports}, read from the source of every .py file in the
    root folder."""
    names = {f[:-3] for f in os.listdir(REPO) if f.endswith(".py")}
    graph = {}
    for name in names:
        tree = ast.parse(open(os.path.join(REPO, name + ".py"), encoding="utf-8").read())
        found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        found |= {node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        graph[name] = sorted(found & names)
    return graph


def test_imports_go_one_way_and_each_job_has_one_owner():
    graph = project_imports()
    # a topological order: a module after everything it imports; a circle would never finish
    order = []
    while len(order) < len(graph):
        ready = [m for m in sorted(graph) if m not in order and all(d in order for d in graph[m])]
        assert ready, f"an import circle among {sorted(set(graph) - set(order))}"
        order += ready
    assert graph["backpack"] == []  # it is copied out alone
    assert graph["tokenizer"] == [] and graph["files"] == ["tokenizer"]
    assert graph["settings"] == ["files"]
    # the edits need the model's edit_senses, not our scripts
    assert graph["interventions"] == ["files", "tokenizer"]
    # they edit senses: interventions.py, not senses.py's page
    for script in ("sample", "finetune_senses"):
        assert "senses" not in graph[script] and "interventions" in graph[script]
    # nothing builds on the inspection script
    assert not any("senses" in graph[m] for m in graph if m != "senses")
