"""Benchmark featcomp's entropy coder against raw constriction and CompressAI.

    .venv/bin/python scripts/bench_entropy.py [--sizes 1e6 1e7] [--repeats 3] [--no-write]

It also measures the framing overhead of one stream (format version 1 vs 2; see
:func:`framing_overhead`).

Data: Laplacian integer symbols, 256 channels with scales 0.3..6 (Laplacian-like features after a
learned head). Tables: ``EntropyCodec.fit`` on an independent sample of 2e5 symbols. Rows:

* featcomp: ``codec.compress_symbols(k)`` / ``codec.decompress_symbols(data)`` on (N, 256) int32,
  header and escapes included.
* raw constriction: the same constriction models (the codec's exact integer tables) on pre-transposed
  (256, N) in-table indices, one ``encode_reverse``/``decode`` per channel, no framing, no escapes:
  the floor of what featcomp can reach on top of constriction.
* CompressAI ``EntropyBottleneck`` (if importable): trained 300 steps on the same distribution,
  ``update(force=True)``, then ``compress``/``decompress`` of a (1, 256, N, 1) tensor.

Columns: bits/symbol (coded size / symbols); overhead vs the integer tables' cross-entropy
(``codec.estimate_bits``; for CompressAI vs its own eval-mode likelihood estimate); encode and decode
throughput in M symbols/s (best of ``--repeats``); peak extra memory during encode/decode as a
multiple of the int32 input (tracemalloc: numpy and Python allocations; constriction's internal
Rust buffers are not traced, they hold the compressed words only).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featcomp.entropy import EntropyCodec  # noqa: E402
from scripts.evals.report import markdown_table, write_section  # noqa: E402

C = 256


def laplace_symbols(rng: np.random.Generator, n: int) -> np.ndarray:
    scales = np.linspace(0.3, 6.0, C)[None, :]
    return np.round(rng.laplace(size=(n, C)) * scales).astype(np.int32)


def round_robin(fns: dict[str, object], repeats: int) -> dict[str, tuple[float, object]]:
    """Best-of-``repeats`` seconds and the last output of each function, timed in turns.

    Every repeat runs each function once, in the same order, so all rows see the same machine load
    (this machine is shared and noisy: ratios between rows are the figures to trust).
    """
    best = {name: float("inf") for name in fns}
    out: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: (best[name], out[name]) for name in fns}


def peak_extra(fn) -> float:
    """Peak traced allocation (bytes) while running fn."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(peak - base)


def prepare_featcomp(codec: EntropyCodec, k: np.ndarray) -> dict:
    data = codec.compress_symbols(k)
    assert np.array_equal(codec.decompress_symbols(data), k), "featcomp round trip failed"
    est = codec.estimate_bits(k)
    enc = lambda: codec.compress_symbols(k)  # noqa: E731
    dec = lambda: codec.decompress_symbols(data)  # noqa: E731
    mem = max(peak_extra(enc), peak_extra(dec)) / (4 * k.size)
    return dict(enc=enc, dec=dec, bits=8 * len(data), est=est, n=k.size, mem=mem)


def prepare_raw(codec: EntropyCodec, k: np.ndarray) -> dict:
    import constriction

    models = codec._models  # the codec's exact integer tables, built once
    idx = np.ascontiguousarray((k - codec.table_min[None, :]).T)
    inside = (idx >= 0) & (idx < codec.table_size[:, None])
    idx = np.where(inside, idx, codec.table_size[:, None]).astype(np.int32)  # escapes as the escape symbol only
    M = idx.shape[1]

    def enc():
        coder = constriction.stream.stack.AnsCoder()
        for c in range(C - 1, -1, -1):
            coder.encode_reverse(idx[c], models[c])
        return coder.get_compressed()

    words = enc()

    def dec():
        coder = constriction.stream.stack.AnsCoder(words)
        out = np.empty_like(idx)
        for c in range(C):
            out[c] = coder.decode(models[c], M)
        return out

    assert np.array_equal(dec(), idx)
    est = float(np.take_along_axis(codec._cost_table, idx.astype(np.int64), axis=1).sum())  # no escape stage
    mem = max(peak_extra(enc), peak_extra(dec)) / (4 * k.size)
    return dict(enc=enc, dec=dec, bits=32 * len(words), est=est, n=k.size, mem=mem)


def prepare_compressai(k: np.ndarray, rng: np.random.Generator) -> dict | str:
    try:
        import warnings

        warnings.filterwarnings("ignore")
        import torch
        from compressai.entropy_models import EntropyBottleneck as CaiBottleneck
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"CompressAI not importable ({type(e).__name__}: {e})"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    eb = CaiBottleneck(C)
    params = [p for n_, p in eb.named_parameters() if not n_.endswith("quantiles")]
    aux = [p for n_, p in eb.named_parameters() if n_.endswith("quantiles")]
    opt = torch.optim.Adam(params, lr=1e-2)
    aux_opt = torch.optim.Adam(aux, lr=1e-1)
    for _ in range(300):
        x = torch.from_numpy(laplace_symbols(rng, 256).astype(np.float32) + rng.uniform(-0.5, 0.5, (256, C)).astype(np.float32))
        _, lik = eb(x.T.reshape(1, C, 256, 1))
        loss = -torch.log2(lik).sum() / 256
        opt.zero_grad()
        aux_opt.zero_grad()
        (loss + eb.loss()).backward()
        opt.step()
        aux_opt.step()
    eb.update(force=True)
    eb.eval()
    x = torch.from_numpy(np.ascontiguousarray(k.T.astype(np.float32))).reshape(1, C, -1, 1)
    with torch.no_grad():
        _, lik = eb(x, training=False)
        est = float(-torch.log2(lik).sum())
        strings = eb.compress(x)
    # (CompressAI clamps out-of-range values, so its output is not compared with x element for element)

    def enc():
        with torch.no_grad():
            return eb.compress(x)

    def dec():
        with torch.no_grad():
            return eb.decompress(strings, x.shape[2:])

    mem = max(peak_extra(enc), peak_extra(dec)) / (4 * k.size)
    return dict(enc=enc, dec=dec, bits=8 * sum(len(s_) for s_ in strings), est=est, n=k.size, mem=mem)


def framing_overhead(frames: tuple[int, ...] = (100, 250, 10_000), seeds: int = 3) -> tuple[str, list[str]]:
    """Framing (header + ANS flush) of one stream, stream format version 1 vs 2, in bits.

    Overhead = 8 * len(stream) - ``codec.estimate_bits(k)`` (the tables' ideal cost), averaged over
    ``seeds`` (one seed at 10k frames). Version 1 is the same ANS payload re-framed with
    ``bitstream.pack(..., version=1)``, byte for byte what featcomp wrote before version 2.
    """
    from featcomp.entropy import bitstream

    rows = []
    for tail in [(64,), (512,), (64, 7, 7)]:
        for T in frames:
            o1, o2 = [], []
            for s in range(seeds if T <= 1000 else 1):
                rng = np.random.default_rng(1000 + s)
                sc = np.linspace(0.5, 4.0, tail[0]).reshape((1, tail[0]) + (1,) * (len(tail) - 1))
                codec = EntropyCodec.fit(np.round(rng.laplace(size=(400, *tail)) * sc).astype(np.int32))
                k = np.round(rng.laplace(size=(T, *tail)) * sc).astype(np.int32)
                v2 = codec.compress_symbols(k)
                h = bitstream.unpack(v2, codec.digest, codec.channels)
                v1 = bitstream.pack(h.shape, codec.digest, h.payload, version=1)
                est = codec.estimate_bits(k)
                o1.append(8 * len(v1) - est)
                o2.append(8 * len(v2) - est)
            a, b = float(np.mean(o1)), float(np.mean(o2))
            rows.append([f"({T}, {', '.join(map(str, tail))})", f"{a:.1f}", f"{a / T:.3f}", f"{b:.1f}", f"{b / T:.3f}"])
            print(rows[-1], flush=True)
    table = markdown_table(
        ["shape", "v1 framing bits/stream", "v1 bits/frame", "v2 framing bits/stream", "v2 bits/frame"], rows
    )
    return table, rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-compressai", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    codec = EntropyCodec.fit(laplace_symbols(rng, 200_000 // C + 1))
    rows, notes = [], []
    for size in args.sizes:
        n = int(round(size / C))
        k = laplace_symbols(rng, n)
        label = f"{k.size:.2g}"
        prepared = {"featcomp": prepare_featcomp(codec, k), "raw constriction, same tables": prepare_raw(codec, k)}
        cai = None
        if not args.no_compressai:
            cai = prepare_compressai(k, rng)
            if isinstance(cai, str):
                notes.append(cai)
            else:
                prepared["CompressAI EntropyBottleneck"] = cai
        fns = {}
        for name, p in prepared.items():
            fns[(name, "enc")] = p["enc"]
            fns[(name, "dec")] = p["dec"]
        times = round_robin(fns, args.repeats)
        res = []
        for name, p in prepared.items():
            res.append((name, dict(bps=p["bits"] / p["n"], over=(p["bits"] - p["est"]) / p["est"],
                                   enc=p["n"] / times[(name, "enc")][0], dec=p["n"] / times[(name, "dec")][0],
                                   mem=p["mem"])))
        m_ = dict(res)
        f, r = m_["featcomp"], m_["raw constriction, same tables"]
        cai = m_.get("CompressAI EntropyBottleneck", cai)
        for name, m in res:
            rows.append(
                [
                    label,
                    name,
                    f"{m['bps']:.4f}",
                    f"{100 * m['over']:+.4f}%",
                    f"{m['enc'] / 1e6:.1f}",
                    f"{m['dec'] / 1e6:.1f}",
                    f"{m['mem']:.2f}x",
                ]
            )
        ratios = f"featcomp / raw constriction: encode {f['enc'] / r['enc']:.2f}x, decode {f['dec'] / r['dec']:.2f}x"
        if isinstance(cai, dict):
            ratios += f"; featcomp / CompressAI: encode {f['enc'] / cai['enc']:.1f}x, decode {f['dec'] / cai['dec']:.1f}x"
        notes.append(f"{label} symbols: {ratios}.")
        print(rows[-len(res):], ratios, flush=True)
    table = markdown_table(
        ["symbols", "coder", "bits/symbol", "overhead vs cross-entropy", "encode M sym/s", "decode M sym/s", "peak extra memory / int32 input"],
        rows,
    )
    framing, _ = framing_overhead()
    body = (
        "## Entropy coding (`scripts/bench_entropy.py`)\n\n"
        "Laplacian integer symbols, 256 channels (scales 0.3..6), tables fitted on an independent 2e5-symbol "
        "sample (precision 16). Overhead: coded bytes (header, escapes and ANS flush included for featcomp) vs "
        "the integer tables' cross-entropy; for CompressAI vs its own likelihood estimate. Throughput: best of "
        f"{args.repeats}, single thread, every row timed in turn within each repeat (round robin), so the ratios "
        "compare rows under the same load. Memory: tracemalloc peak during encode or decode.\n\n"
        + table
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n- CompressAI 1.2.8 was pip-installed into the venv for this benchmark only (not a project dependency); "
        "its strings are one per example, here one example of shape (1, 256, N, 1); it clamps out-of-range values "
        "instead of coding them exactly.\n"
        "\n### Stream framing (header + ANS flush)\n\n"
        "Bits of one stream beyond the tables' ideal cost (`8 * len(stream) - codec.estimate_bits(k)`), Laplacian "
        "symbols, tables fitted on 400 other frames, mean of 3 seeds (1 at 10k frames). v1: the same ANS payload "
        "framed as stream format version 1 (13-15-byte header: 2-byte magic, version/ndim, full varint shape, "
        "4-byte digest prefix, CRC32; trailing zero bytes trimmed). v2 (written now): 1-byte magic, "
        "version/lead/ndim byte, varint shape without the channel axis, CRC32 over the codec digest, header and "
        "payload; leading and trailing zero bytes of the ANS payload trimmed. Target (issue 4): <= 1 bit/frame "
        "at >= 100 frames.\n\n"
        + framing
        + "\n"
    )
    print(body)
    if not args.no_write:
        write_section("entropy", body)
    return body


if __name__ == "__main__":
    main()
