"""Imports go one way: every import of every module under clipcy/ (function-level ones
included) follows the layering table of docs/ARCHITECTURE.md "Import direction", the one
place that states it. A module the table does not place fails too, so a new module or
subpackage is placed there before it lands."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clipcy"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
SECTION = "## Import direction"


@dataclass(frozen=True)
class Layering:
    """Layer of each module prefix, and what each layer may import (layers or modules)."""

    layer_of: dict[str, str]  # "storage" or "errors" (dotted below clipcy) -> layer name
    allowed: dict[str, tuple[str, ...]]  # layer -> the layers and modules it may import

    def layer(self, module: str) -> str | None:
        """The layer of a module (dotted below clipcy): its longest listed prefix."""
        parts = module.split(".")
        for n in range(len(parts), 0, -1):
            found = self.layer_of.get(".".join(parts[:n]))
            if found is not None:
                return found
        return None

    def may_import(self, source_layer: str, target: str) -> bool:
        target_layer = self.layer(target)
        if target_layer == source_layer:
            return True
        for allowed in self.allowed[source_layer]:
            if allowed == target_layer and allowed in self.allowed:
                return True
            if target == allowed or target.startswith(allowed + "."):
                return True
        return False


def parse_layering(text: str) -> Layering:
    """The table under SECTION: | layer | modules | may import |, names in backticks."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    layer_of: dict[str, str] = {}
    allowed: dict[str, tuple[str, ...]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        (layer,) = re.findall(r"`([^`]+)`", cells[0])
        for module in re.findall(r"`([^`]+)`", cells[1]):
            assert module not in layer_of, f"{module} is placed in two layers"
            layer_of[module.rstrip("/").replace("/", ".")] = layer
        allowed[layer] = tuple(re.findall(r"`([^`]+)`", cells[2]))
    assert allowed, f"no layering table under {SECTION!r} in {ARCHITECTURE}"
    for layer, names in allowed.items():
        for name in names:
            assert name in allowed or name in layer_of or any(
                name.startswith(m + ".") for m in layer_of), f"{layer} may import unknown {name}"
    return Layering(layer_of, allowed)


def module_name(path: Path) -> str:
    """clipcy/storage/refs.py -> "storage.refs"; clipcy/storage/__init__.py -> "storage";
    clipcy/__init__.py -> "" (the package itself)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = PACKAGE.joinpath(*dotted.split(".")) if dotted else PACKAGE
    return base.is_dir() or any(base.with_suffix(s).exists() for s in (".py", ".pyx", ".pxd"))


def _target(imported: str, name: str | None) -> str | None:
    """The clipcy module an import loads (dotted below clipcy, "" for the package), or None
    for anything outside clipcy. `from clipcy.a import b` loads clipcy.a.b when b is a
    module, else clipcy.a."""
    if imported != "clipcy" and not imported.startswith("clipcy."):
        return None
    dotted = imported[len("clipcy."):] if imported != "clipcy" else ""
    if name is not None:
        sub = f"{dotted}.{name}" if dotted else name
        if _is_module(sub):
            return sub
    return dotted


def _resolve_relative(module: str, is_package: bool, level: int, imported: str | None) -> str:
    base = ["clipcy", *module.split(".")] if module else ["clipcy"]
    if not is_package:
        base.pop()
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([imported] if imported else []))


Import = tuple[int, str, str]  # line, the import as written (short), target module


def python_imports(path: Path, source: str) -> list[Import]:
    """Every import in a .py/.pyi file, at any depth (functions, TYPE_CHECKING blocks)."""
    module = module_name(path)
    is_package = path.stem == "__init__"
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                t = _target(alias.name, None)
                if t is not None:
                    found.append((node.lineno, f"import {alias.name}", t))
        elif isinstance(node, ast.ImportFrom):
            imported = node.module or ""
            if node.level:
                imported = _resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                t = _target(imported, alias.name)
                if t is not None:
                    found.append((node.lineno, f"from {imported} import {alias.name}", t))
    return found


_CYTHON_IMPORT = re.compile(
    r"^\s*(?:from\s+(?P<mod>[\w.]+)\s+c?import\s+\(?\s*(?P<names>[\w\s,]+)"
    r"|c?import\s+(?P<plain>[\w.]+))", re.M)


def cython_imports(path: Path, source: str) -> list[Import]:
    """Every import and cimport line of a .pyx/.pxd file (a regex: Cython is not Python)."""
    found: list[Import] = []
    for m in _CYTHON_IMPORT.finditer(source):
        line = source.count("\n", 0, m.start()) + 1
        if m.group("plain"):
            t = _target(m.group("plain"), None)
            if t is not None:
                found.append((line, f"import {m.group('plain')}", t))
            continue
        for name in re.split(r"[\s,]+", m.group("names").strip()):
            if not name or name == "as":
                continue
            t = _target(m.group("mod"), name)
            if t is not None:
                found.append((line, f"from {m.group('mod')} import {name}", t))
                break  # one target per line is enough: the rest are names, not modules
    return found


def violations(layering: Layering, path: Path, source: str) -> list[str]:
    """Each import of the module at path (with its source) that the layering forbids."""
    module = module_name(path)
    if module == "":
        layer = layering.layer_of.get("__init__")
    else:
        layer = layering.layer(module)
    where = str(path.relative_to(ROOT))
    if layer is None:
        return [f"{where}: module clipcy.{module} is in no layer of {ARCHITECTURE.name}"]
    parse = cython_imports if path.suffix in (".pyx", ".pxd") else python_imports
    bad = []
    for line, text, target in parse(path, source):
        if target == "":
            continue  # the package itself (its __version__): loaded before any module in it
        target_layer = layering.layer(target)
        if target_layer is None:
            bad.append(f"{where}:{line}: {text}: clipcy.{target} is in no layer")
        elif not layering.may_import(layer, target):
            bad.append(f"{where}:{line}: {text}: {layer} may not import {target_layer} "
                       f"(clipcy.{target})")
    return bad


def _modules() -> list[Path]:
    return sorted(p for ext in ("*.py", "*.pyi", "*.pyx", "*.pxd") for p in PACKAGE.rglob(ext)
                  if "__pycache__" not in p.parts)


needs_docs = pytest.mark.skipif(not ARCHITECTURE.exists(), reason="docs not in this tree")


@needs_docs
def test_every_import_follows_the_documented_direction() -> None:
    layering = parse_layering(ARCHITECTURE.read_text(encoding="utf-8"))
    modules = _modules()
    assert len(modules) > 40
    bad = [v for p in modules for v in violations(layering, p, p.read_text(encoding="utf-8"))]
    assert not bad, "imports against docs/ARCHITECTURE.md \"Import direction\":\n" + "\n".join(bad)


@needs_docs
@pytest.mark.parametrize(("where", "line", "wrong"), [
    ("storage/spans.py", "from clipcy.archive.format import SPAN_SIZE", "storage may not import "
     "archive (clipcy.archive.format)"),
    ("layers/packing.py", "    from clipcy.archive import format as F",
     "layers may not import archive (clipcy.archive.format)"),
    ("tar/streams.py", "from clipcy.layers.blobread import open_layer_reader",
     "tar may not import layers (clipcy.layers.blobread)"),
    ("storage/local.py", "from ..image import layout", "storage may not import image "
     "(clipcy.image.layout)"),
    ("layers/_checkpoint.pyx", "from clipcy.archive._writer cimport BlockEncoder",
     "layers may not import archive (clipcy.archive._writer)"),
    ("errors.py", "import clipcy.storage.refs", "shared may not import storage"),
])
def test_a_wrong_import_is_named(where: str, line: str, wrong: str) -> None:
    """The check fails on an import against the direction, naming the module and the import
    (at module level and inside a function alike)."""
    layering = parse_layering(ARCHITECTURE.read_text(encoding="utf-8"))
    path = PACKAGE / where
    body = f"{line}\n" if not line.startswith(" ") else f"def f():\n{line}\n"
    bad = violations(layering, path, body)
    assert len(bad) == 1 and bad[0].startswith(f"clipcy/{where}:") and wrong in bad[0], bad
    assert violations(layering, path, "from clipcy.errors import ClipError\n") == []


@needs_docs
def test_a_module_in_no_layer_is_named() -> None:
    layering = parse_layering(ARCHITECTURE.read_text(encoding="utf-8"))
    bad = violations(layering, PACKAGE / "newpkg" / "thing.py", "")
    assert bad == ["clipcy/newpkg/thing.py: module clipcy.newpkg.thing is in no layer of "
                   "ARCHITECTURE.md"]
