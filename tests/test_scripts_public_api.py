"""Scripts use featcomp's public API only (issue 15: "evaluations as thin scripts over the public API").

Every ``scripts/*.py`` and ``scripts/evals/*.py`` is parsed with :mod:`ast` (nothing is imported or run) and
every featcomp name it imports is checked. A name is *public* when it is listed in ``featcomp.__all__`` or in
the ``__all__`` of a direct child of featcomp (a subpackage such as ``featcomp.train`` or a module such as
``featcomp.ratecontrol``) and does not start with an underscore. So ``from featcomp.train import
fit_temporal_codec`` passes and ``from featcomp.train.refit import fit_temporal_codec`` (a grandchild
module), ``from featcomp.pipelines.demo import _synthesize_clips`` or ``from featcomp.entropy import
bitstream`` (a module, not in ``__all__``) fail. Attribute chains on an imported ``featcomp``
(``featcomp.open_store(...)``, ``featcomp.train.train_head``) are checked the same way.

A script that needs something that is not public either gets it made public (exported with a docstring,
when it is a real capability) or does without. The only exceptions are benchmarks that deliberately measure
internals, listed in ``ALLOWED`` with the reason.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("scripts/*.py"), *ROOT.glob("scripts/evals/*.py")])

# (script, module, name): deliberate uses of internals by benchmarks, each with its reason.
ALLOWED: dict[tuple[str, str, str], str] = {
    # bench_entropy measures the version-1 stream framing against version 2: it rewrites a v2 stream's
    # header as v1 byte for byte, which only the framing module can do.
    ("bench_entropy.py", "featcomp.entropy", "bitstream"): "writes the old v1 framing to compare sizes",
    # bench_temporal times the constriction decode calls of one chunk in isolation (the floor no numpy
    # work can beat) and reads stream payloads: it needs the coder, the table truncation and the layout
    # constants of the temporal codec itself.
    ("bench_temporal.py", "featcomp.entropy", "bitstream"): "reads raw ANS payload words to time decoding",
    ("bench_temporal.py", "featcomp.entropy", "coder"): "times the raw constriction calls (decode floor)",
    ("bench_temporal.py", "featcomp.entropy", "temporal"): "the temporal layout's run/sort thresholds",
    ("bench_temporal.py", "featcomp.entropy.indexed", "scale_grid"): "builds table families of given size",
    ("bench_temporal.py", "featcomp.entropy.indexed", "truncated_tables"): "the decoder's own table rows",
    # bench_store fabricates the merged index of a store with many videos to time index reads, without
    # writing the videos themselves.
    ("bench_store.py", "featcomp.store.format", "IndexTable"): "fabricates a large merged index",
    ("bench_store.py", "featcomp.store.format", "encode_index_file"): "fabricates a large merged index",
    # bench_fixed_costs splits a store's fixed bytes into their components (tables, steps, card, sidecar
    # framing) and builds the old layout beside the new one, so it takes the header apart itself
    ("bench_fixed_costs.py", "featcomp.store.format", "group_doc"): "the root group document's bytes",
    ("bench_fixed_costs.py", "featcomp.store.sidecar", "encode_sidecar"): "sidecar bytes by component",
    ("bench_fixed_costs.py", "featcomp.store.sidecar", "decode_sidecar"): "sidecar bytes by component",
    ("bench_fixed_costs.py", "featcomp.store.sidecar", "is_sidecar_name"): "finds the sidecar among the files",
    ("bench_fixed_costs.py", "featcomp.store.sidecar", "pack_header"): "the old layout vs format 5",
    ("bench_fixed_costs.py", "featcomp.store.writer", "build_header"): "the header a version-4 writer records",
    ("bench_fixed_costs.py", "featcomp.store", "sidecar"): "the sidecar module itself (import)",
    # bench_rc_temporal prototypes a temporal codec variant that does not exist yet (a level-aware context):
    # it prices streams with the layout's flag costs and fits the prior directly
    ("bench_rc_temporal.py", "featcomp.entropy.layouts", "RESTART_FLAG_BITS"): "restart flag costs of layout 3",
    ("bench_rc_temporal.py", "featcomp.entropy", "bitstream"): "the stream header's size",
    ("bench_rc_temporal.py", "featcomp.entropy.temporal_prior", "fit_temporal_prior"): "fits a prototype's prior",
}


def _public(module: str) -> set[str] | None:
    """The public names of ``module`` (``featcomp`` or a direct child), or None when it is not one."""
    parts = module.split(".")
    if parts[0] != "featcomp" or len(parts) > 2:
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    names = getattr(mod, "__all__", None)
    return None if names is None else {n for n in names if not n.startswith("_")}


def _public_children() -> set[str]:
    """Direct children of featcomp that declare an ``__all__`` (modules one may import names from)."""
    out = set()
    for p in (ROOT / "featcomp").iterdir():
        name = p.stem if p.suffix == ".py" else p.name if (p / "__init__.py").is_file() else None
        if name and not name.startswith("_") and _public(f"featcomp.{name}") is not None:
            out.add(name)
    return out


def violations(path: Path, allowed: dict | None = None) -> list[str]:
    """Every non-public featcomp name that ``path`` imports or reaches by attribute, as readable lines."""
    allowed = ALLOWED if allowed is None else allowed
    tree = ast.parse(path.read_text(), str(path))
    children = _public_children()
    top = _public("featcomp") or set()
    bad = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name

    def check(module: str, name: str, line: int) -> None:
        if (path.name, module, name) in allowed:
            return
        names = _public(module)
        if names is None or name not in names:
            bad.append(f"{where}:{line}: {module}.{name} is not public")

    aliases: set[str] = set()  # local names bound to the featcomp package itself
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "featcomp" or node.module.startswith("featcomp.")):
            for a in node.names:
                check(node.module, a.name, node.lineno)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "featcomp":
                    aliases.add(a.asname or "featcomp")
                elif a.name.startswith("featcomp."):
                    parts = a.name.split(".")
                    if len(parts) > 2 or parts[1] not in children:
                        if (path.name, ".".join(parts[:-1]), parts[-1]) not in allowed:
                            bad.append(f"{where}:{node.lineno}: import {a.name} is not public")
                    if a.asname is None:
                        aliases.add("featcomp")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr not in top and node.attr not in children:
                bad.append(f"{where}:{node.lineno}: featcomp.{node.attr} is not public")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases
              and node.value.attr in children):
            check(f"featcomp.{node.value.attr}", node.attr, node.lineno)
    return bad


def test_there_are_scripts_to_check():
    names = {p.name for p in SCRIPTS}
    assert {"rd_eval.py", "temporal_eval.py", "generality_eval.py"} <= names
    assert any(p.parent.name == "evals" for p in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT / "scripts")))
def test_script_imports_only_public_featcomp_names(path):
    bad = violations(path)
    assert not bad, "scripts must use featcomp's public API (see this test's docstring):\n" + "\n".join(bad)


def test_the_check_catches_private_and_deep_imports(tmp_path):
    """The checker itself: each of these lines is a violation, the last ones are not."""
    src = tmp_path / "x.py"
    src.write_text(
        "from featcomp.train.refit import fit_temporal_codec\n"
        "from featcomp.pipelines.demo import _synthesize_clips\n"
        "from featcomp.entropy import bitstream\n"
        "from featcomp.train import _LAZY\n"
        "import featcomp.entropy.coder\n"
        "import featcomp\n"
        "featcomp._private\n"
        "featcomp.train.refit\n"
        "from featcomp.train import fit_temporal_codec, train_head\n"
        "from featcomp import open_store\n"
        "from featcomp.ratecontrol import RateControl\n"
        "featcomp.open_store\n"
        "featcomp.train.train_head\n")
    bad = violations(src, allowed={})
    assert [int(b.split(":")[1]) for b in bad] == [1, 2, 3, 4, 5, 7, 8], bad


def test_the_allow_list_is_short_and_names_only_benchmarks():
    assert len(ALLOWED) <= 20  # 5 benchmarks that measure formats and decoders from the inside
    assert all(script.startswith("bench_") and reason for (script, _, _), reason in ALLOWED.items())
    used = set()
    for path in SCRIPTS:
        if path.name.startswith("bench_"):
            full = violations(path, allowed={})
            used |= {k for k in ALLOWED if k[0] == path.name and any(f"{k[1]}.{k[2]} " in b for b in full)}
    assert used == set(ALLOWED), f"stale allow-list entries: {set(ALLOWED) - used}"
