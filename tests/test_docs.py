"""The documentation: the site builds in strict mode, the commands the pages show run as written (as far as can be
checked without running them), and the README stays a front page.

- The site (mkdocs.yml): ``mkdocs build --strict``, as ``make docs`` runs it, into a temporary folder. Strict mode
  fails on a broken link or anchor, a page missing from the nav, a docstring of the API reference that griffe
  cannot parse, and a link to a repository file that does not exist (docs/hooks/repo_files.py).
- The shell blocks of README.md and of every docs/*.md page: each file path into the repository that a command
  names exists; each ``--config-file`` loads into FastReID's config with occreid's keys; each trailing
  ``KEY VALUE`` override is a key of that config and takes that value (yacs' own checks, as ``train_net.py``
  applies them); ``train_net.py`` and ``occreid`` commands parse with their own argument parsers; dataset names
  are registered; ``make`` targets exist. Their Python blocks import only occreid modules and names that exist.
- README.md is at most 220 lines.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELL = {"bash", "sh", "shell", "console"}
# the first component of a path into the repository (anything else, logs/ or $FASTREID_DATASETS/..., is not checked)
REPO_TOP = {"benchmarks", "configs", "docs", "plugins", "projects", "scripts", "tests", "third_party_patches",
            ".ci", "train_net.py", "Makefile", "mkdocs.yml", "pyproject.toml", "README.md"}
PLACEHOLDER = re.compile(r"<([A-Za-z_][\w.-]*)>")  # <occreid>, <model_final.pth>: kept as one token, @name@
PLACEHOLDER_ROOT = "@occreid@/"  # <occreid>/: the occreid checkout, in commands run from another folder
OUTPUT_FLAGS = {"--out", "--json", "--overlay", "--uri", "--index", "--out-dir"}  # files a command writes or opens
KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")
FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
COMPARE_BEGIN, COMPARE_END = "<!-- compare:occluded_duke_cpu:begin -->", "<!-- compare:occluded_duke_cpu:end -->"


def code_blocks(page, langs):
    return [body for lang, body in FENCE.findall(page.read_text()) if lang in langs]


def commands(block):
    """Each simple command of a shell block: (tokens, elsewhere), continuations joined, comments dropped, split at
    ``&&``, ``||``, ``;``, ``|`` and parentheses; ``elsewhere`` once the block has changed directory (``cd``), where
    relative paths and ``make`` targets are another checkout's."""
    text = PLACEHOLDER.sub(r"@\1@", block.replace("\\\n", " "))
    out, elsewhere = [], False
    for line in text.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        current, inside_parens = [], False
        for tok in list(lex) + [";"]:
            if tok and set(tok) <= set("&|;()<>"):
                if current:
                    out.append((current, elsewhere or inside_parens))
                    if current[0] == "cd":
                        inside_parens = inside_parens or "(" in line
                        elsewhere = elsewhere or "(" not in line
                current = []
            else:
                current.append(tok)
    return out


def repo_path(token):
    """The repository path ``token`` names, or None when it names no file of the repository."""
    if token.startswith(PLACEHOLDER_ROOT):
        token = token[len(PLACEHOLDER_ROOT):]
    if token.split("/", 1)[0] in REPO_TOP and not any(c in token for c in "$*<>|"):
        return token
    return None


@pytest.fixture(scope="module")
def fastreid_cfg():
    """A function: config file -> FastReID config with occreid's keys, as train_net.py builds it."""
    from fastreid.config import get_cfg
    from occreid.fastreid import add_occreid_config

    def load(config_file):
        cfg = get_cfg()
        add_occreid_config(cfg)
        cfg.merge_from_file(str(ROOT / config_file))
        return cfg
    return load


class Command:
    """What one shell command names: files, a FastReID config and its overrides, datasets, make targets."""

    def __init__(self, tokens, elsewhere=False):
        env = {}
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            k, _, v = tokens[0].partition("=")
            env[k] = v
            tokens = tokens[1:]
        self.tokens, self.env = tokens, env
        self.program = next((t for t in tokens if not t.endswith(("python", "python3", "bash"))), "")
        self.paths, self.config, self.torchreid_config, self.opts, self.datasets = [], None, None, [], []
        self.make_targets, self.argv, self.parser = [], None, None
        abbreviated = "..." in tokens  # "occreid index ... --backend milvus": a variant of the command above it

        for i, tok in enumerate(tokens):
            prev = tokens[i - 1] if i else ""
            for part in ([tok] + ([tok.split("=", 1)[1]] if "=" in tok else [])):
                path = repo_path(part)
                if path and prev not in OUTPUT_FLAGS and (not elsewhere or part.startswith(PLACEHOLDER_ROOT)):
                    self.paths.append(path)
        prog = self.program.rsplit("/", 1)[-1]
        if prog == "make":
            if elsewhere:
                return
            self.make_targets = [t for t in tokens[1:] if "=" not in t and not t.startswith("-")]
            cfg_vars = dict(t.split("=", 1) for t in tokens[1:] if "=" in t)
            if "train" in self.make_targets:
                default = re.search(r"^CONFIG \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
                self.config = cfg_vars.get("CONFIG", default)
                self.opts = shlex.split(cfg_vars.get("OPTS", ""))
            return
        argv = tokens[tokens.index(self.program) + 1:] if self.program in tokens else []
        argv = [a[len(PLACEHOLDER_ROOT):] if a.startswith(PLACEHOLDER_ROOT) else a for a in argv]
        if prog == "train_net.py":  # occreid's, or FastReID's tools/train_net.py with the import line
            from fastreid.engine import default_argument_parser
            self.parser, self.argv = default_argument_parser(), argv
        elif prog == "occreid":
            from occreid.fastreid.cli import build_parser
            self.parser, self.argv = build_parser(), argv
        if abbreviated:
            self.parser = None
        if self.parser is not None:
            return
        # scripts without an importable parser: --config-file and trailing KEY VALUE pairs by their form
        for i, tok in enumerate(argv):
            if tok == "--config-file" and i + 1 < len(argv):
                if prog == "torchreid_main.py":
                    self.torchreid_config = argv[i + 1]
                else:
                    self.config = argv[i + 1]
        if self.config:
            i = 0
            while i < len(argv):
                if KEY.match(argv[i]) and i + 1 < len(argv) and not (i and argv[i - 1].startswith("--")):
                    self.opts += argv[i:i + 2]
                    i += 2
                else:
                    i += 1

    def parse(self):
        """Run the command's own argument parser (SystemExit on an unknown flag or a missing argument)."""
        args = self.parser.parse_args(self.argv)
        self.config = getattr(args, "config_file", None) or None
        self.opts = list(getattr(args, "opts", None) or [])
        if getattr(args, "dataset", None):
            self.datasets.append(args.dataset)


def all_commands():
    for page in PAGES:
        for block in code_blocks(page, SHELL):
            for tokens, elsewhere in commands(block):
                yield page.relative_to(ROOT).as_posix(), " ".join(tokens), tokens, elsewhere


COMMANDS = list(all_commands())


def test_pages_show_commands():
    assert len(COMMANDS) > 30, "the shell blocks of README.md and docs/*.md were not found"
    names = {page for page, _, _, _ in COMMANDS}
    assert {"README.md", "docs/getting_started.md"} <= names


@pytest.mark.parametrize("page,line,tokens,elsewhere", COMMANDS, ids=[f"{p}: {c[:70]}" for p, c, _, _ in COMMANDS])
def test_command_names_what_exists(page, line, tokens, elsewhere, fastreid_cfg):
    from fastreid.data.datasets import DATASET_REGISTRY

    cmd = Command(list(tokens), elsewhere)
    for path in cmd.paths:
        assert (ROOT / path).exists(), f"{page}: `{line}` names {path}, which does not exist"
    if cmd.parser is not None:
        try:
            cmd.parse()
        except SystemExit as e:
            pytest.fail(f"{page}: `{line}` does not parse with its program's arguments (exit {e.code})")
    for target in cmd.make_targets:
        assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M), \
            f"{page}: `{line}`: the Makefile has no target {target}"
    if cmd.torchreid_config:
        assert (ROOT / cmd.torchreid_config).is_file(), f"{page}: `{line}`: no {cmd.torchreid_config}"
    if cmd.config:
        assert (ROOT / cmd.config).is_file(), f"{page}: `{line}`: no config file {cmd.config}"
        cfg = fastreid_cfg(cmd.config)
        assert len(cmd.opts) % 2 == 0, f"{page}: `{line}`: KEY VALUE overrides come in pairs: {cmd.opts}"
        try:
            cfg.merge_from_list(cmd.opts)  # yacs: an unknown key raises KeyError, a value of another type ValueError
        except (KeyError, ValueError, AssertionError) as e:
            pytest.fail(f"{page}: `{line}`: override rejected by the config of {cmd.config}: {e!r}")
        cmd.datasets += list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS)
    else:
        assert not cmd.opts, f"{page}: `{line}`: KEY VALUE overrides without a config file"
    for name in cmd.datasets:
        assert DATASET_REGISTRY.get(name) is not None, f"{page}: `{line}`: dataset {name} is not registered"


def python_imports(block):
    for m in re.finditer(r"^[ \t]*from\s+(occreid[\w.]*)\s+import\s+(?:\(([^)]*)\)|([\w \t,]+))", block, re.M):
        names = (m.group(2) or m.group(3)).split(",")
        yield m.group(1), [n.split()[0] for n in names if n.strip()]
    for m in re.finditer(r"^[ \t]*import\s+(occreid[\w.]*)", block, re.M):
        yield m.group(1), []


PY_IMPORTS = [(page.relative_to(ROOT).as_posix(), mod, names)
              for page in PAGES for block in code_blocks(page, {"python"}) for mod, names in python_imports(block)]


@pytest.mark.parametrize("page,module,names", PY_IMPORTS, ids=[f"{p}: {m}" for p, m, _ in PY_IMPORTS])
def test_python_blocks_import_what_exists(page, module, names):
    import griffe  # comes with mkdocstrings-python (scripts/requirements.txt)

    pkg = griffe.load("occreid", search_paths=[str(ROOT / "plugins")], resolve_aliases=False)
    path = module.split(".", 1)[1] if "." in module else ""
    try:
        mod = pkg[path] if path else pkg
    except KeyError:
        pytest.fail(f"{page}: `import {module}`: no such module")
    for name in names:
        assert name in mod.members, f"{page}: `from {module} import {name}`: {module} has no {name}"


def test_site_builds_in_strict_mode(tmp_path):
    assert importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings_handlers"), \
        "MkDocs and mkdocstrings are not installed: run scripts/setup_env.sh (scripts/requirements.txt)"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    for page in ("index.html", "install/index.html", "getting_started/index.html", "api/layers/index.html",
                 "projects/OCNet/index.html"):
        assert (tmp_path / "site" / page).is_file(), f"the site has no {page}"
    api = (tmp_path / "site" / "api" / "layers" / "index.html").read_text()
    assert 'id="occreid.layers.center_focus_module.CenterFocusModule"' in api, "the API reference lacks the layers"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    for command in ("make train", "make test"):
        assert command in text, f"README.md does not show `{command}`"
    begin, end = text.find(COMPARE_BEGIN), text.find(COMPARE_END)
    assert 0 <= begin < end, "README.md lost the headline table that benchmarks/compare.py fills"
