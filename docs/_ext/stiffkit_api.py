"""A small Sphinx extension for stiffkit's API pages.

Directives
----------
``.. stiffkit-modules:: PACKAGE``
    Document ``PACKAGE`` and every public module below it (names without a leading
    underscore, found by :mod:`pkgutil` at build time), one section per module. Each module
    lists only the objects *defined* in it, so an object re-exported by a package is
    documented once, where it lives, and a module that moves or splits needs no edit here.
``.. stiffkit-curated:: MODULE``
    A table of ``MODULE.__all__`` (subpackages first), each name linked to the page that
    documents it.

Events
------
* ``missing-reference``: a reference to a public import path (``stiffkit.estimators.
  pair_stiffness``) or to a bare name (``edm_sigmas``) is resolved to the object's defining
  module when that is unique.
* ``autodoc-process-docstring``: two house notations are escaped outside literals: the
  shape ``[batch, *dims]`` (whose star would open emphasis) and the modulus ``|λ₁|`` (which
  would be a substitution reference).
* ``autodoc-skip-member``: the "Alias for field number N" members of named tuples are
  skipped (their fields are described in the class docstring).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer, PycodeError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Section underline of the generated module sections (the page title uses ``=``).
UNDERLINE = "-"
#: A star that opens a shape's "rest of the dimensions" (``*dims``) rather than emphasis.
_SHAPE_STAR = re.compile(r"(?<=[\[(,\s])\*(?=(?:dims|shape|batch|sizes)\b|[A-Za-z_][\w.]*[\]),])")
#: A modulus written with bars, ``|λ₁|``, which reST would read as a substitution reference.
_MODULUS = re.compile(r"(?<![\\\w|])\|(?=[^\s|][^|]*\|(?![\w|]))")
#: Inline literals and interpreted text, left untouched by the escaping.
_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")


# ---------------------------------------------------------------------- module discovery
def public_modules(name: str) -> list[ModuleType]:
    """Return the module `name` and every public module below it, depth first, sorted."""
    module = importlib.import_module(name)
    found = [module]
    if hasattr(module, "__path__"):
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            found.extend(public_modules(f"{name}.{info.name}"))
    return found


def defined_members(module: ModuleType) -> list[str]:
    """Return the public names that `module` itself defines, in ``__all__`` order if any.

    Functions and classes count where their ``__module__`` is `module`; other objects
    (constants, aliases) where the module's source documents them with ``#:`` or a string.
    """
    try:
        attr_docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
    except PycodeError:
        attr_docs = {}
    documented = {name for (scope, name) in attr_docs if scope == ""}
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(module, n, None)
        if obj is None or inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if getattr(obj, "__module__", None) == module.__name__:
                out.append(n)
        elif n in documented:
            out.append(n)
    return out


def _automodule(name: str, members: list[str], *, no_index: bool = False) -> list[str]:
    lines = [f".. automodule:: {name}"]
    if members:
        lines.append(f"   :members: {', '.join(members)}")
    if no_index:
        lines.append("   :no-index:")
    return lines + [""]


class ModulesDirective(SphinxDirective):
    """``.. stiffkit-modules:: PACKAGE`` — see the module docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        root = self.arguments[0]
        lines: list[str] = []
        for module in public_modules(root):
            name = module.__name__
            if name != root:
                lines += [name, UNDERLINE * len(name), ""]
            lines += _automodule(name, defined_members(module))
            self.env.note_dependency(inspect.getsourcefile(module) or "")
        node = nodes.section()
        node.document = self.state.document
        source = self.get_source_info()[0]
        content = StringList(lines, source=source)
        nested_parse_with_titles(self.state, content, node)
        return node.children


def _summary(obj: Any) -> str:
    """Return the first paragraph of `obj`'s docstring on one line."""
    doc = inspect.getdoc(obj) or ""
    para = doc.split("\n\n", 1)[0]
    return escape_shapes(" ".join(line.strip() for line in para.splitlines()))


def _target(obj: Any, name: str) -> str:
    if inspect.ismodule(obj):
        return f":py:mod:`{obj.__name__}`"
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f":py:obj:`{name} <{obj.__module__}.{obj.__qualname__}>`"
    return f"``{name}``"


class CuratedDirective(SphinxDirective):
    """``.. stiffkit-curated:: MODULE`` — see the module docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
                 "   * - name", "     - what it is"]
        objects = {name: getattr(module, name) for name in module.__all__}
        # Subpackages first, then the functions and classes, each alphabetically.
        order = sorted(objects, key=lambda n: (not inspect.ismodule(objects[n]), n.lower()))
        for name in order:
            obj = objects[name]
            lines += [f"   * - {_target(obj, name)}", f"     - {_summary(obj) or ' '}"]
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), 0, node)
        return node.children


# ---------------------------------------------------------------------- events
def escape_shapes(text: str) -> str:
    """Escape shape stars (``[batch, *dims]``) and modulus bars (``|λ|``) outside literals."""
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):  # even indices lie outside literals
        parts[i] = _MODULUS.sub(r"\\|", _SHAPE_STAR.sub(r"\\*", parts[i]))
    return "".join(parts)


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = [escape_shapes(line) for line in lines]


def _skip_member(app, what, name, obj, skip, options):
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    return None


def _import_target(target: str) -> Any:
    """Return the object a dotted `target` names, importing its longest module prefix."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _missing_reference(app: Sphinx, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    candidates: list[str] = []
    if target.startswith("stiffkit."):
        obj = _import_target(target)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            name = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
            if name != target:
                candidates = [name]
        if not candidates:  # a constant or method re-exported under a package path
            package, _, last = target.rpartition(".")
            candidates = [k for k in domain.objects
                          if k.startswith(package + ".") and k.endswith("." + last)]
    elif target and "." not in target.lstrip(".~"):
        context = node.get("py:module") or ""
        if context.startswith("stiffkit"):
            candidates = [k for k in domain.objects
                          if k.startswith("stiffkit.") and k.endswith("." + target)]
    if len(candidates) != 1:
        return None
    return domain.resolve_xref(env, node.get("refdoc", ""), app.builder, node["reftype"],
                               candidates[0], node, contnode)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("stiffkit-modules", ModulesDirective)
    app.add_directive("stiffkit-curated", CuratedDirective)
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
