"""MkDocs hook: the site's pages link to the repository's files the way they do on GitHub.

The pages under docs/ and the README link with repository-relative paths (``../projects/OCNet/README.md``,
``../benchmarks/results/rerank_cpu.md``, ``docs/install.md`` from the README), so that they read the same on
GitHub and in an editor. MkDocs only knows the files under docs/. This hook (detectron2 resolves its Sphinx links
to repository files in the same spirit):

- makes the repository's README.md the site's home page (``index.md``), so the front page has one source;
- copies every repository file outside docs/ that a page links to (a project's README, a results table, a
  picture, a config) into the site at its repository path, following links from copied Markdown files too;
- rewrites each relative link to the copied file's place in the site.

A relative link to a file that does not exist, to a directory without a README.md, or out of the repository is a
warning, so ``mkdocs build --strict`` fails on it; links between pages and their ``#anchors`` are then checked by
MkDocs itself (``validation`` in mkdocs.yml). Links inside code (fenced blocks, inline code) are not links.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from urllib.parse import unquote

from mkdocs.structure.files import File, Files, InclusionLevel

log = logging.getLogger("mkdocs.hooks.repo_files")

# [text](target "title") and ![alt](target); reference definitions [id]: target
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _repo_root(config) -> str:
    return os.path.dirname(os.path.abspath(config.config_file_path))


def _mask_code(text: str) -> str:
    """``text`` with fenced code blocks and code spans blanked out (same length, so offsets still match)."""
    out, fence = [], None
    for line in text.splitlines(keepends=True):
        m = FENCE.match(line)
        blank = " " * len(line.rstrip("\n")) + line[len(line.rstrip("\n")):]
        if fence is None:
            if m:
                fence = m.group(1)
            out.append(blank if m else line)
            continue
        closing = m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
            and line.strip() == m.group(1)[0] * len(line.strip())
        if closing:
            fence = None
        out.append(blank)
    masked = "".join(out)
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), masked)


def _links(text: str):
    """(start, end, target) of every link target outside code."""
    masked = _mask_code(text)
    for rx in (INLINE, REFDEF):
        for m in rx.finditer(masked):
            target = m.group(1)
            start, end = m.span(1)
            if target.startswith("<") and target.endswith(">"):
                target, start, end = target[1:-1], start + 1, end - 1
            yield start, end, target


def _resolve(target: str, source: str, root: str):
    """(repository path, fragment) that ``target`` in the file ``source`` points to; None for links that are not
    relative file links (URLs, anchors on the same page, absolute paths); raises ValueError for a broken one."""
    if not target or target.startswith(("#", "/")) or SCHEME.match(target):
        return None
    path, _, fragment = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    full = os.path.normpath(os.path.join(os.path.dirname(source), path))
    rel = os.path.relpath(full, root)
    if rel == ".." or rel.startswith(".." + os.sep):
        raise ValueError(f"points out of the repository ({rel})")
    if os.path.isdir(full):
        if os.path.isfile(os.path.join(full, "README.md")):
            rel = os.path.join(rel, "README.md")
        elif not os.path.isfile(os.path.join(full, "index.md")):
            raise ValueError(f"is a directory without a README.md ({rel})")
        else:
            rel = os.path.join(rel, "index.md")
    elif not os.path.exists(full):
        raise ValueError(f"does not exist ({rel})")
    return rel.replace(os.sep, "/"), fragment


def _site_path(rel: str, docs: str) -> str:
    """Where the repository file ``rel`` is in the site (MkDocs' src_uri)."""
    if rel == "README.md":
        return "index.md"
    if rel.startswith(docs + "/"):
        return rel[len(docs) + 1:]
    return rel


def _nav_paths(nav):
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, dict):
        for v in nav.values():
            yield from _nav_paths(v)
    elif isinstance(nav, list):
        for v in nav:
            yield from _nav_paths(v)


def on_files(files: Files, *, config) -> Files:
    root = _repo_root(config)
    docs = os.path.relpath(config.docs_dir, root).replace(os.sep, "/")
    in_nav = {p for p in _nav_paths(config.nav or []) if not SCHEME.match(p)}

    def add(rel: str) -> File | None:
        uri = _site_path(rel, docs)
        existing = files.get_file_from_path(uri)
        if existing is not None:
            if os.path.abspath(existing.abs_src_path) != os.path.join(root, rel):
                log.warning(f"repository file {rel} and {existing.src_uri} would both be {uri} in the site")
            return None
        inclusion = InclusionLevel.UNDEFINED if uri in in_nav else InclusionLevel.NOT_IN_NAV
        f = File.generated(config, uri, abs_src_path=os.path.join(root, rel), inclusion=inclusion)
        files.append(f)
        return f

    queue = [f.abs_src_path for f in files.documentation_pages()]
    home = add("README.md")
    if home is not None:
        queue.append(home.abs_src_path)
    for uri in sorted(in_nav):  # repository files named in the nav (projects/<Method>/README.md)
        if files.get_file_from_path(uri) is None and os.path.isfile(os.path.join(root, uri)):
            queue.append(add(uri).abs_src_path)
    seen = set()
    while queue:
        source = queue.pop()
        if source in seen:
            continue
        seen.add(source)
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
        for _, _, target in _links(text):
            try:
                resolved = _resolve(target, source, root)
            except ValueError:
                continue  # reported once, with the page's name, by on_page_markdown
            if resolved is None or resolved[0].startswith(docs + "/"):
                continue
            f = add(resolved[0])
            if f is not None and f.src_uri.endswith(".md"):
                queue.append(f.abs_src_path)
    return files


def on_page_markdown(markdown: str, *, page, config, files) -> str:
    root = _repo_root(config)
    docs = os.path.relpath(config.docs_dir, root).replace(os.sep, "/")
    source = page.file.abs_src_path
    here = posixpath.dirname(page.file.src_uri)
    pieces, last = [], 0
    for start, end, target in _links(markdown):
        try:
            resolved = _resolve(target, source, root)
        except ValueError as e:
            log.warning(f"{os.path.relpath(source, root)}: the link '{target}' {e}")
            continue
        if resolved is None:
            continue
        rel, fragment = resolved
        new = posixpath.relpath(_site_path(rel, docs), here or ".") + (f"#{fragment}" if fragment else "")
        pieces += [markdown[last:start], new]
        last = end
    pieces.append(markdown[last:])
    return "".join(pieces)
