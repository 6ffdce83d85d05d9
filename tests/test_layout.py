"""The code's own rules that no linter holds: no private name used outside the module that defines it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("mtldm_cli", "tests", "benchmarks", "scripts")
# accelerate has no public way to unregister a stage's objects (see train/loop.py)
ALLOWED = {"_custom_objects"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in ALLOWED


def test_no_private_name_crosses_a_module():
    found = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            mod = ast.parse(path.read_text(), str(path))
            for node in ast.walk(mod):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}"
                              for a in node.names if _private(a.name)]
                    if node.module and any(_private(p) for p in node.module.split(".")):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports from {node.module}")
                elif isinstance(node, ast.Attribute) and _private(node.attr):
                    owner = node.value
                    if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
    assert not found, "\n".join(found)
