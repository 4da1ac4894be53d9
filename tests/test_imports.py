"""The package's imports flow one way: config -> data/models/norm -> engine -> run -> jobs ->
cli, with no circle. Read from the source with `ast`, so a lazy import inside a function
counts as much as one at the top."""
from __future__ import annotations

import ast
from pathlib import Path

import bnexp

PACKAGE = Path(bnexp.__file__).resolve().parent
TIERS = [  # a module may import only from tiers before its own (report: also within report)
    {"bnexp", "bnexp.config", "bnexp.interrupts", "bnexp.formats",
     "bnexp.normalizers", "bnexp.dataset_files", "bnexp.schema"},
    {"bnexp.samplers", "bnexp.datasets", "bnexp.records", "bnexp.lock", "bnexp.norm", "bnexp.optim",
     "bnexp.models.layers"},
    {"bnexp.loader", "bnexp.identity", "bnexp.checkpoint", "bnexp.models.mlp", "bnexp.models.resnet",
     "bnexp.probes", "bnexp.optimization_probes"},
    {"bnexp.models", "bnexp.engine", "bnexp.packed_model", "bnexp.packed_data"},
    {"bnexp.evaluation", "bnexp.validation", "bnexp.help", "bnexp.packed_optim"},
    {"bnexp.session", "bnexp.sweep"},
    {"bnexp.run", "bnexp.packed_fit", "bnexp.packing"},
    {"bnexp.jobs", "bnexp.report", "bnexp.report.collect", "bnexp.report.stats",
     "bnexp.report.layout", "bnexp.report.plots", "bnexp.report.diagnostics",
     "bnexp.report.page", "bnexp.report.build", "bnexp.report.metrics",
     "bnexp.report.outcomes", "bnexp.report.probe_outcomes", "bnexp.report.verdicts",
     "bnexp.report.question",
     "bnexp.report.sections"},
    {"bnexp.pack_jobs", "bnexp.progress"},
    {"bnexp.callbacks", "bnexp.compose", "bnexp.report.cli", "bnexp.report.__main__",
     "bnexp.hydra_plugin"},
    {"bnexp.cli"},
    {"bnexp.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The bnexp modules `path` imports (`from bnexp.x import name` resolves to bnexp.x.name
    when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                      else node.module for alias in node.names}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def test_every_module_has_a_tier():
    tiered = set().union(*TIERS)
    assert set(graph()) == tiered, set(graph()) ^ tiered


def test_no_module_imports_one_above_it():
    tier = {name: index for index, names in enumerate(TIERS) for name in names}
    upward = [(module, imported) for module, targets in graph().items() for imported in targets
              if tier[imported] > tier[module] or (tier[imported] == tier[module] and not (
                  module.startswith("bnexp.report") and imported.startswith("bnexp.report")))]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(edges[module]):
            assert state.get(imported) != "open", " -> ".join([*path, module, imported])
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_the_schema_module_imports_nothing_of_bnexp():
    assert graph()["bnexp.config"] == set()
