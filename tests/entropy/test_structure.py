"""The shape of featcomp/entropy (issue 15, "coding separated from context"), checked on the source.

* constriction is imported by one module of the package, :mod:`featcomp.entropy.ans`;
* module-level imports inside ``featcomp/entropy`` go one way, down the layers of
  ``docs/architecture.md`` (coder -> tables -> layouts -> codecs -> kinds), and the coding modules stay
  free of torch;
* the codecs keep their context and never call the coder themselves: every symbol goes through a
  shared layout of :mod:`featcomp.entropy.layouts`, which knows no codec kind;
* every built-in frozen codec derives from one base, :class:`~featcomp.entropy._frozen.FrozenCodecBase`,
  and the factorized codec's bytes, digest and dict are those of its golden file;
* the old import paths that other packages, scripts and tests use keep working.
"""

from __future__ import annotations

import ast
import base64
import importlib
from pathlib import Path

import numpy as np
import pytest

import featcomp

PKG = Path(featcomp.__file__).resolve().parent
ENTROPY = PKG / "entropy"
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "entropy"

# module -> layer; a module-level import inside featcomp/entropy must point to a strictly lower layer
LAYERS = {
    "bitstream": 0, "ans": 0, "tables": 0, "quantization": 0, "prior": 0,
    "_frozen": 1, "indexed": 1,
    "layouts": 2, "temporal_context": 2,
    "codec": 3, "coder": 3,
    "temporal": 4, "hyperprior": 4, "bottleneck": 4,
    "kinds": 5, "temporal_prior": 5, "hyperprior_prior": 5, "trainable": 5,
    "__init__": 6,
}
NUMPY_ONLY = {"bitstream", "ans", "tables", "_frozen", "indexed", "layouts", "temporal_context", "codec", "coder",
              "temporal", "hyperprior", "kinds"}
CODECS = ("codec", "temporal", "hyperprior")


def _imports(path: Path, *, module_level: bool) -> list[str]:
    """Absolute module names imported by ``path`` (``from a import b`` gives ``a.b`` and ``a``)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _entropy_deps(name: str) -> set[str]:
    """The featcomp.entropy modules that module ``name`` imports at module level."""
    deps = set()
    for m in _imports(ENTROPY / f"{name}.py", module_level=True):
        parts = m.split(".")
        if parts[:2] == ["featcomp", "entropy"] and len(parts) > 2 and parts[2] in LAYERS:
            deps.add(parts[2])
    return deps


def test_every_entropy_module_has_a_layer():
    assert {p.stem for p in ENTROPY.glob("*.py")} == set(LAYERS)


def test_only_ans_imports_constriction_anywhere_in_the_package():
    importers = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                       if any(m.split(".")[0] == "constriction" for m in _imports(p, module_level=False)))
    assert importers == ["entropy/ans.py"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_module_level_imports_go_down_the_layers(name):
    up = {d: LAYERS[d] for d in _entropy_deps(name) if LAYERS[d] >= LAYERS[name]}
    assert not up, f"featcomp.entropy.{name} (layer {LAYERS[name]}) imports {up} at module level"


@pytest.mark.parametrize("name", sorted(NUMPY_ONLY))
def test_coding_modules_do_not_import_torch_at_module_level(name):
    assert not [m for m in _imports(ENTROPY / f"{name}.py", module_level=True) if m.split(".")[0] == "torch"]


def test_the_coder_and_the_layouts_know_no_codec_kind():
    assert _entropy_deps("ans") == set()
    assert _entropy_deps("layouts") == {"ans", "indexed"}
    assert _entropy_deps("indexed") <= {"ans", "tables"}
    assert _entropy_deps("temporal_context") <= {"_frozen"}  # the context knows nothing of coding
    for name in ("ans", "layouts", "indexed", "temporal_context", *CODECS):
        assert "kinds" not in _entropy_deps(name)


def _attribute_calls(name: str) -> set[str]:
    tree = ast.parse((ENTROPY / f"{name}.py").read_text())
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


@pytest.mark.parametrize("name", CODECS)
def test_codecs_code_only_through_the_shared_layouts(name):
    """No codec pushes or pops symbols itself (nor calls constriction's methods): that is the layouts' work."""
    direct = _attribute_calls(name) & {"push", "pop", "push_indexed", "pop_indexed", "pop_run_bounded", "encode_reverse",
                                       "get_compressed", "num_valid_bits"}
    assert not direct, f"featcomp.entropy.{name} codes symbols itself: {sorted(direct)}"


def test_each_layout_has_one_implementation():
    """The class-rows layout (temporal and hyperprior layout 2) and the full-rows layout (layout 1) are
    defined in layouts.py only, and both codecs call them."""
    defs = {}
    for p in ENTROPY.glob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_"):
                defs.setdefault(n.name, []).append(p.stem)
    for fn in ("push_class_rows", "pop_class_frame", "pop_sorted", "push_full_rows", "pop_full_rows",
               "push_class_escapes", "pop_class_escapes", "push_escapes", "pop_escapes", "encode_channels",
               "decode_channels", "class_bits"):
        assert [m for m in defs.get(fn, []) if m != "coder"] == ["layouts"], (fn, defs.get(fn))
    for name in ("temporal", "hyperprior"):
        src = (ENTROPY / f"{name}.py").read_text()
        for fn in ("push_class_rows", "pop_class_frame", "push_full_rows", "pop_full_rows"):
            assert f"layouts.{fn}(" in src, (name, fn)


def test_every_builtin_codec_derives_from_the_one_frozen_base():
    from featcomp.entropy import EntropyCodec, HyperpriorCodec, TemporalCodec, entropy_kind
    from featcomp.entropy._frozen import DigestedCodec, FrozenCodecBase

    assert DigestedCodec is FrozenCodecBase
    for kind, cls in (("factorized", EntropyCodec), ("temporal", TemporalCodec), ("hyperprior", HyperpriorCodec)):
        assert issubclass(cls, FrozenCodecBase) and entropy_kind(kind).codec is cls and cls.kind == kind


def test_the_factorized_codec_keeps_its_bytes_digest_and_dict():
    from featcomp.entropy import EntropyCodec, codec_from_dict, codec_kind

    data = (FIX / "codec.bin").read_bytes()
    codec = EntropyCodec.from_bytes(data)
    assert codec.to_bytes() == data and codec.digest == data[-32:].hex()
    d = codec.to_dict()
    assert set(d) == {"format", "format_version", "channels", "precision", "digest", "offsets", "table_min",
                      "table_size", "freqs_u16_b64"}  # the dict it always wrote: no "kind", no "bytes_b64"
    assert d["format"] == "featcomp.entropy.EntropyCodec" and d["format_version"] == 1 and d["digest"] == codec.digest
    assert base64.b64decode(d["freqs_u16_b64"]) == codec.freqs.astype("<u2").tobytes()
    assert d["offsets"] == [float(v) for v in codec.offsets] and d["table_min"] == codec.table_min.tolist()
    again = codec_from_dict(d)
    assert type(again) is EntropyCodec and again == codec and codec_kind(codec) == "factorized"
    assert hash(again) == hash(codec)
    k = np.load(FIX / "symbols.npy")
    assert codec.compress_symbols(k) == (FIX / "stream_v2.bin").read_bytes()
    stream = (FIX / "stream_v2.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress(stream), codec.dequantize(k))  # the base's decompress


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIX.glob("*codec*.bin")))
def test_every_golden_codec_loads_and_reserializes_byte_for_byte(fixture):
    from featcomp.entropy import EntropyCodec, HyperpriorCodec, TemporalCodec, codec_from_dict

    data = (FIX / fixture).read_bytes()
    cls = {b"FCEC": EntropyCodec, b"FCTC": TemporalCodec, b"FCHP": HyperpriorCodec}[data[:4]]
    codec = cls.from_bytes(data)
    assert codec.to_bytes() == data
    assert codec_from_dict(codec.to_dict()).to_bytes() == data


OLD_PATHS = {
    "featcomp.entropy.coder": ["ANS_PRECISION", "ESCAPE_HEADER_SIZE", "build_models", "check_backend", "find_escapes",
                               "encode", "decode", "family_weights", "check_family_backend", "push_indexed",
                               "pop_indexed", "push_escapes", "pop_escapes", "escape_bits", "_family_model"],
    "featcomp.entropy.indexed": ["TableFamily", "scale_grid", "truncated_tables", "reclaimed_tables", "class_radii",
                                 "zigzag", "zigzag_columns", "unzigzag_table", "tail_tables", "push_class_escapes",
                                 "pop_class_escapes", "class_bits"],
    "featcomp.entropy.codec": ["EntropyCodec", "quantize_pmf"],
    "featcomp.entropy.temporal": ["TemporalCodec", "integer_context", "MU_LIMIT", "WEIGHT_LIMIT", "RESTART_FLAG_BITS",
                                  "MAX_STREAM_FRAMES", "_TAIL_SHIFT", "_SORT_MIN", "_RUN_MIN", "_LUT_ENTRIES",
                                  "_locations_and_tables"],
    "featcomp.entropy.hyperprior": ["HyperpriorCodec", "scale_index", "analysis_int", "log_lut", "_RUN_MIN"],
    "featcomp.entropy._frozen": ["DigestedCodec", "readonly", "to_numpy"],
}


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_old_import_paths_still_work(module):
    mod = importlib.import_module(module)
    missing = [n for n in OLD_PATHS[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"


def test_the_compatibility_coder_functions_code_exactly_like_the_new_modules():
    """Old callers hand the compatibility names constriction coders of their own; same words either way."""
    from featcomp.entropy import ans, coder, layouts
    from featcomp.entropy.indexed import TableFamily, scale_grid, truncated_tables

    fam = TableFamily.build(scale_grid(0.2, 20.0, 8), Q=2, radius=12)
    rng = np.random.default_rng(0)
    vals = rng.integers(-40, 40, 50)
    R = fam.radius
    esc = (vals < -R) | (vals > R)
    sym = np.where(esc, fam.n - 1, vals + R).astype(np.int32)
    tab = rng.integers(0, fam.freqs.shape[0], 50)
    new = ans.Encoder()
    layouts.push_escapes(new, vals[esc], np.full(esc.sum(), -R), np.full(esc.sum(), R))
    new.push_indexed(sym, tab, fam.weights)
    old = ans.Encoder()._ans.__class__()  # a bare constriction coder, as older code made them
    coder.push_escapes(old, vals[esc], np.full(esc.sum(), -R), np.full(esc.sum(), R))
    coder.push_indexed(old, sym, tab, fam.weights)
    assert old.get_compressed().tolist() == new.words().tolist()
    dec = ans.Decoder(new.payload())
    assert (coder.pop_indexed(dec, tab, fam.weights) == sym).all()
    np.testing.assert_array_equal(coder.pop_escapes(dec, np.full(esc.sum(), -R), np.full(esc.sum(), R)), vals[esc])
    assert dec.is_empty()
    # the one-stream class escapes of the former indexed module
    from featcomp.entropy.indexed import pop_class_escapes, push_class_escapes

    tt = truncated_tables(fam, 8)
    cls = tt.row_class[tab]
    far = np.abs(vals) > tt.radii[cls]
    enc = ans.Encoder()
    push_class_escapes(enc, tt, R, vals[far], np.zeros(far.sum(), np.int64), tab[far], cls[far])
    assert far.sum() >= 5
    got = pop_class_escapes(ans.Decoder(enc.payload()), tt, R, tab[far], cls[far], np.zeros(far.sum(), np.int64))
    np.testing.assert_array_equal(got, vals[far])
