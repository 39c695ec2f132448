"""The package structure docs/architecture.md describes, checked on the
source: data flows one way (model -> NIR graph -> lowering -> exporters or
targets -> verification), so exporters and targets never import each other,
targets never import training, and the command line and the verification
never branch on a backend's name."""
import ast
from pathlib import Path

import pytest

from fer2neuro.exporters import exporter_names
from fer2neuro.targets import target_names

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fer2neuro.exporters": ROOT / "exporters", "fer2neuro.targets": ROOT / "targets",
            **{f"fer2neuro.{name}": ROOT / "fer2neuro" / name
               for name in ("lowering", "nirgraph", "cli", "verification", "interop")},
            "fer2neuro.interop.for_peer": ROOT / "fer2neuro" / "interop" / "for_peer"}


def imports(folder: Path) -> dict[str, set[str]]:
    """Every fer2neuro module each file imports, at the top or inside a function."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(folder.parent))] = {n for n in names if n.startswith("fer2neuro")}
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path} imports {name}" for path, names in imports(PACKAGES[package]).items()
            for name in sorted(names) if name.startswith(forbidden)]


@pytest.mark.parametrize("package, forbidden", [
    ("fer2neuro.exporters", ("fer2neuro.targets",)),
    ("fer2neuro.targets", ("fer2neuro.exporters", "fer2neuro.training", "fer2neuro.qat")),
    ("fer2neuro.lowering", ("fer2neuro.exporters", "fer2neuro.targets", "fer2neuro.training", "fer2neuro.model")),
    ("fer2neuro.nirgraph", ("fer2neuro.exporters", "fer2neuro.targets", "fer2neuro.training", "fer2neuro.model",
                            "fer2neuro.lowering", "fer2neuro.interop")),
    # exporters write --for files through for_peer: it must not pull targets into them
    ("fer2neuro.interop.for_peer", ("fer2neuro.targets", "fer2neuro.training", "fer2neuro.qat",
                                    "fer2neuro.verification")),
])
def test_data_flows_one_way(package, forbidden):
    assert offenders(package, forbidden) == []


def test_the_scan_sees_imports_inside_functions(tmp_path):
    """The check above can fail: a lazy import of a target is found."""
    (tmp_path / "m.py").write_text("def f():\n    from fer2neuro.targets.loihi import LoihiTarget\n")
    assert imports(tmp_path) == {f"{tmp_path.name}/m.py": {"fer2neuro.targets.loihi",
                                                          "fer2neuro.targets.loihi.LoihiTarget"}}


def name_branches(folder: Path, names: set[str]) -> list[str]:
    """Comparisons and ``startswith`` calls against a backend name: ``if
    target == "onnx"``, ``name in ("lava", "loihi")``, ``name.startswith("lava")``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            operands = []
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("startswith", "endswith"):
                operands = list(node.args)
            for operand in operands:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                for value in values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str) and \
                            (value.value in names or any(n.startswith(value.value) for n in names if value.value)):
                        found.append(f"{path.relative_to(folder.parent)}:{node.lineno} compares with "
                                     f"{value.value!r}")
    return found


BACKENDS = set(target_names()) | set(exporter_names())


def test_peer_runners_import_nothing_of_fer2neuro():
    """The runners run with a peer's own Python, where fer2neuro is not
    installed (and must not be: Sinabs and Rockpool pin another nir)."""
    found = imports(ROOT / "fer2neuro" / "interop" / "runners")
    assert found and all(names == set() for names in found.values()), found


@pytest.mark.parametrize("package", ["fer2neuro.cli", "fer2neuro.verification", "fer2neuro.interop"])
def test_no_branches_on_backend_names(package):
    assert name_branches(PACKAGES[package], BACKENDS) == []


def test_the_branch_scan_finds_a_branch(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text('def f(t):\n    if t == "onnx":\n        return 1\n'
                              '    return t.startswith("lava") or t in ("x", "loihi")\n')
    assert len(name_branches(pkg, BACKENDS)) == 3
