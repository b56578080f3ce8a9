"""The package's import layers, checked on the source with :mod:`ast`.

``docs/architecture.md`` explains the layers: which package owns what and which way imports go. In short,
a module may import only lower layers (and modules of its own unit); two units in one layer never import
each other; ``torch_utils`` imports only the base layer, ``stores`` only the base layer and itself.
Every import counts: module-level and function-local, absolute and relative (``TYPE_CHECKING`` ones too),
and ``importlib.import_module`` calls with a constant name, so that no import can hide an upward dependency.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "retina_codec"
PKG = "retina_codec"

# unit (module path below retina_codec, longest prefix wins) -> layer; the table of docs/architecture.md.
# Layer 0 is one unit ("base"): its modules may import each other.
BASE = ("_version", "errors", "io_utils", "locking", "progress", "hashing")
LAYERS: dict[str, int] = {
    **{name: 0 for name in BASE},
    "torch_utils": 1,
    "stores": 1,
    "recordings": 2,
    "sim": 3,
    "models": 4,
    "contributions": 5,
    "modes": 6,
    "rf": 6,
    "stats": 6,
    "classifiers": 7,
    "plots": 8,
    "pipeline.layout": 9,
    "pipeline.freshness": 9,
    "report": 10,
    "pipeline": 11,  # pipeline.stages and the rest of pipeline
    "cli": 12,
    "__main__": 12,
    "": 12,  # the package root (retina_codec/__init__.py): a facade, imported by no module of the package
}
# units whose allowed imports are narrower than "any lower layer"
ONLY: dict[str, set[str]] = {
    "torch_utils": {"base"},
    "stores": {"base", "stores"},
}
# inside stores, a store module (one per store kind) imports only the codec of its own package
STORES_SHARED = {"stores", "stores.codec"}


def unit_of(module: str) -> str:
    """The table entry of a dotted module name (``retina_codec.contributions.api`` -> ``contributions``)."""
    rel = module[len(PKG) + 1:] if module.startswith(PKG + ".") else ("" if module == PKG else module)
    best = None
    for key in LAYERS:
        if key and (rel == key or rel.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    if best is None:
        return "" if rel == "" else f"?{rel}"
    if best == "__main__":  # ``python -m retina_codec`` is the CLI's entry point
        return "cli"
    return "base" if best in BASE else best


def layer_of(unit: str) -> int | None:
    if unit == "base":
        return 0
    return LAYERS.get(unit)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    """True when ``dotted`` (inside the package) names a module file or a package folder."""
    p = ROOT.joinpath(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file() or p.is_dir()


@dataclass(frozen=True)
class Import:
    source: str  # module that imports
    target: str  # module imported (inside the package)
    line: int
    local: bool  # inside a function / class body rather than at module level


def _resolve_base(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = source.split(".")
    if not is_package:
        parts = parts[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def _is_import_module(func: ast.expr) -> bool:
    """``importlib.import_module(...)`` or a bare ``import_module(...)`` / ``__import__(...)``."""
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _resolve_dynamic(name: str, source: str, is_package: bool) -> str:
    """A constant module name given to ``import_module``, relative ones against the importing package."""
    level = len(name) - len(name.lstrip("."))
    if not level:
        return name
    node = ast.ImportFrom(module=name[level:] or None, names=[], level=level)
    return _resolve_base(node, source, is_package)


def package_imports(path: Path) -> list[Import]:
    """Every import of a ``retina_codec`` module in ``path``, resolved to the imported module's name."""
    source = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    local_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            for inner in ast.walk(node):
                if inner is not node:
                    local_nodes.add(id(inner))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_base(node, source, path.name == "__init__.py")
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append(sub if a.name != "*" and sub.startswith(PKG + ".") and is_module(sub) else base)
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            targets = [_resolve_dynamic(node.args[0].value, source, path.name == "__init__.py")]
        for t in targets:
            if t == PKG or t.startswith(PKG + "."):
                found.append(Import(source, t, node.lineno, id(node) in local_nodes))
    return found


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def violations() -> list[str]:
    """One line per import of the package that breaks the layer rules."""
    return check([imp for path in all_modules() for imp in package_imports(path)])


def check(imports: list[Import]) -> list[str]:
    """One line per import that breaks the layer rules, ``source:line [unit, layer] imports target ...: why``."""
    out = []
    for imp in imports:
        src_u, dst_u = unit_of(imp.source), unit_of(imp.target)
        src_l, dst_l = layer_of(src_u), layer_of(dst_u)
        where = f"{imp.source}:{imp.line}{' (function-local)' if imp.local else ''}"
        what = f"{where} [{src_u}, layer {src_l}] imports {imp.target} [{dst_u}, layer {dst_l}]"
        if src_l is None:
            out.append(f"{what}: {imp.source} is not in the layer table")
            continue
        if dst_l is None:
            out.append(f"{what}: {imp.target} is not in the layer table")
            continue
        if src_u == dst_u:
            if src_u == "stores" and imp.target not in {f"{PKG}.{s}" for s in STORES_SHARED} \
                    and imp.source not in {f"{PKG}.stores"}:
                out.append(f"{what}: a store module imports only the base layer and stores.codec")
            continue
        if dst_u == "":
            out.append(f"{what}: no module imports the package root (import the module that defines it)")
        elif src_u in ONLY and dst_u not in ONLY[src_u]:
            out.append(f"{what}: {src_u} imports only {' and '.join(sorted(ONLY[src_u]))}")
        elif dst_l > src_l:
            out.append(f"{what}: upward import")
        elif dst_l == src_l:
            out.append(f"{what}: peers in one layer do not import each other")
    return out


def test_layer_table_resolves_known_modules():
    assert unit_of("retina_codec.errors") == "base"
    assert unit_of("retina_codec.pipeline.layout") == "pipeline.layout"
    assert unit_of("retina_codec.pipeline.stages") == "pipeline"
    assert unit_of("retina_codec.stores.codec") == "stores"
    assert unit_of("retina_codec") == ""
    assert layer_of("cli") > layer_of("pipeline") > layer_of("report") > layer_of("pipeline.layout")


def test_relative_imports_resolve_to_modules():
    imps = package_imports(PACKAGE / "models" / "checkpoint.py")
    targets = {i.target for i in imps}
    assert "retina_codec.errors" in targets and "retina_codec.models.registry" in targets


def test_the_rules_catch_each_kind_of_violation():
    def imp(src: str, dst: str) -> Import:
        return Import(f"{PKG}.{src}", f"{PKG}.{dst}", 1, True)

    allowed = [imp("cli.demo", "pipeline.stages"), imp("pipeline.stages", "report.html"),
               imp("report.html", "pipeline.layout"), imp("stores.rf", "stores.codec"), imp("stores.rf", "errors"),
               imp("stores", "stores.rf"), imp("torch_utils.hooks", "errors"), imp("io_utils", "errors"),
               imp("__main__", "cli.main"), imp("models.base", "torch_utils.hooks")]
    assert check(allowed) == []
    broken = [imp("models.fft_conv", "contributions.hooks"), imp("modes.store", "rf.sta"),
              imp("torch_utils.hooks", "stores.codec"), imp("stores.rf", "stores.modes"),
              imp("stores.fit", "recordings"), imp("pipeline.layout", "pipeline.freshness"),
              Import(f"{PKG}.rf.sta", PKG, 1, False)]
    bad = check(broken)
    assert len(bad) == len(broken), bad
    assert "upward import" in bad[0] and "peers" in bad[1] and "torch_utils imports only base" in bad[2]
    assert "stores.codec" in bad[3] and "function-local" in bad[0]


def test_no_module_imports_a_higher_layer():
    bad = violations()
    assert not bad, (f"{len(bad)} import(s) break the layers of docs/architecture.md "
                     "(lower never imports higher; peers in one layer do not import each other):\n  "
                     + "\n  ".join(bad))


def test_no_star_imports():
    stars = []
    for path in all_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                stars.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                             "import *")
    assert not stars, "star imports (name what you import):\n  " + "\n  ".join(stars)


TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".toml", ".cfg", ".html", ".css", ".rst", ".yaml", ".yml"}


@pytest.mark.parametrize("where", ["retina_codec", "docs", "README.md", "benchmarks", "figures"])
def test_no_file_cites_a_document_outside_the_repository(where):
    """Definitions are cited from docs/definitions.md, never from a design note that is not shipped."""
    banned = "DESIGN" + ".md"
    root = ROOT / where
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                  and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)
    hits = []
    for p in files:
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if banned in line:
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, f"cite docs/definitions.md instead of {banned}:\n  " + "\n  ".join(hits)


def test_stores_hold_no_torch_models():
    """The store layer is schema + writer + reader: numpy and h5py, no torch (models and computing live above)."""
    found = []
    for path in sorted((PACKAGE / "stores").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert not found, "stores import torch:\n  " + "\n  ".join(found)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_cited_definitions_exist():
    """Every ``docs/definitions.md#section`` cited in the package names a heading of that page."""
    page = ROOT / "docs" / "definitions.md"
    anchors = {_slug(line.lstrip("#")) for line in page.read_text(encoding="utf-8").splitlines()
               if line.startswith("#")}
    missing = []
    for path in [*all_modules(), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for anchor in re.findall(r"definitions\.md#([\w\-]+)", line):
                if anchor not in anchors:
                    missing.append(f"{path.relative_to(ROOT)}:{n}: #{anchor}")
    assert not missing, f"sections not in {page.name} (headings: {sorted(anchors)}):\n  " + "\n  ".join(missing)
