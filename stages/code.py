"""The project's own source files a module runs: what its dvc.yaml `deps` and its resume fingerprint cover.

Read from the code itself (every `import stages...`, at the top of a module or inside a function,
followed transitively, with the packages' `__init__.py` that Python runs on the way), so no list
of files is kept by hand. A module imported by name at run time (a builder, through the registry)
is passed as one more root.
"""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stages"


def module_path(name):
    """The file of a project module ('stages.models' -> stages/models/__init__.py), or None if it is no module."""
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_packages(name):
    """A dotted name and the packages above it: importing stages.models.resnet50 runs all three."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def imported_modules(path):
    """The project modules one file imports, with the packages on the way to them."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from stages import gradcam` imports a module; `from stages.data import load_split` a name.
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {module for name in names if name.split(".")[0] == PACKAGE
            for module in with_packages(name) if module_path(module)}


def code_files(*modules):
    """Every project file that running `modules` imports, as sorted paths relative to the repository root."""
    missing = [module for module in modules if not module_path(module)]
    if missing:
        raise ValueError(f"no project module named {', '.join(missing)}")
    seen, pending = set(), [name for module in modules for name in with_packages(module)]
    while pending:
        path = module_path(pending.pop())
        if path not in seen:
            seen.add(path)
            pending.extend(imported_modules(path))
    return sorted(path.relative_to(REPO_ROOT).as_posix() for path in seen)
