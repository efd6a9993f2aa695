"""Griffe extension for occreid's API reference (``mkdocs.yml``: mkdocstrings' ``extensions``).

The docstrings are written for readers of the source: Google-style sections, shapes and equations, and a few
Sphinx habits. Four adjustments let them render as a reference without editing them:

1. Sphinx roles (``:class:`OCNet```, ``:func:`~x.y```, ``:mod:`occreid.data```) become code spans.
2. A Google section title (``Raises:``) right under a line of text gets the blank line before it that Google style
   expects, so it is read as a section and not as text (``Shapes: ...`` lines sit right above ``Raises:``).
3. In sections of ``name: description`` entries (``Args:``, ``Raises:``, ``Attributes:``, ...), a line that
   continues an entry's description without the deeper indentation Google style asks for is indented as its
   continuation; and an ``Args:`` entry that names several parameters at once (``obc_size, obc_fill: ...``)
   becomes one entry per parameter, each with the shared description, when every name is a parameter of the
   signature. Anything else that is not a parameter stays as written, so griffe still warns about it (and
   ``mkdocs build --strict`` fails).
4. A package's re-exports (``from .center_focus_module import CenterFocusModule`` in ``occreid/layers/__init__.py``)
   are not rendered a second time: every object is documented once, in the module that defines it
   (``show_submodules: true`` renders the package's modules under the package's docstring).
"""

from __future__ import annotations

import re

import griffe

PACKAGE = "occreid"
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|term|ref):`[~!]?([^`]+)`")
PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments", "Other Parameters"}
ENTRY_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|"
                          r"Other Parameters|Raises|Exceptions|Warns|Attributes):\s*$")
SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Returns?|"
                     r"Yields?|Receives?|Raises|Exceptions|Warns|Warnings?|Attributes|Examples?|Notes?|"
                     r"See Also|Methods|Functions|Classes|Modules):\s*$")
ENTRY = re.compile(r"^(\s*)([^:\s][^:]*?)\s*:(\s.*|)$")


def _parameter_names(obj: griffe.Object) -> set[str]:
    try:
        params = obj.parameters  # functions; classes: their __init__'s
    except (AttributeError, griffe.AliasResolutionError):
        return set()
    return {p.name for p in params or ()}


def _fix_entries(text: str, names: set[str]) -> str:
    """Inside sections of ``name: description`` entries: continuation lines indented under their entry;
    ``a, b: description`` -> ``a: description`` + ``b: description`` in Args-like sections."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        header = ENTRY_HEADER.match(lines[i])
        i += 1
        if not header:
            continue
        base, params = len(header.group(1)), header.group(2) in PARAM_SECTIONS
        entry_indent = None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= base:
                break  # the section ended
            if not line.strip():
                out.append(line)
                i += 1
                continue
            if entry_indent is None:
                entry_indent = indent
            block = [line]
            i += 1
            while i < len(lines) and lines[i].strip():
                nxt_indent = len(lines[i]) - len(lines[i].lstrip())
                if nxt_indent > entry_indent:
                    block.append(lines[i])
                elif nxt_indent == entry_indent and not ENTRY.match(lines[i]):
                    block.append(" " * 4 + lines[i])  # a continuation written at the entry's indentation
                else:
                    break
                i += 1
            match = ENTRY.match(block[0]) if indent == entry_indent else None
            grouped = [n.strip() for n in match.group(2).split(",")] if params and match and "," in match.group(2) \
                else []
            if grouped and all(n.lstrip("*") in names for n in grouped):
                for n in grouped:
                    out.append(f"{match.group(1)}{n}:{match.group(3)}")
                    out.extend(block[1:])
            else:
                out.extend(block)
    return "\n".join(out)


def _separate_sections(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    for line in lines:
        if SECTION.match(line) and out and out[-1].strip():
            out.append("")
        out.append(line)
    return "\n".join(out)


def _fix_docstring(obj: griffe.Object) -> None:
    if obj.docstring is None:
        return
    text = _separate_sections(ROLE.sub(r"`\1`", obj.docstring.value))
    text = _fix_entries(text, _parameter_names(obj))
    obj.docstring.value = text


def _walk(obj: griffe.Object):
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _walk(member)


class OccreidDocs(griffe.Extension):
    """Applies the four adjustments above once the ``occreid`` package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.path != PACKAGE:
            return
        for obj in _walk(pkg):
            _fix_docstring(obj)
            if obj.is_module and obj.is_init_module:
                for name, member in list(obj.members.items()):
                    if member.is_alias and member.target_path.startswith(obj.path + "."):
                        del obj.members[name]
