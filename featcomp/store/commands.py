"""``featcomp info STORE``, ``featcomp verify STORE`` and ``featcomp repair STORE`` (no torch imported)."""

from __future__ import annotations

import argparse
import json


def configure_info(parser: argparse.ArgumentParser) -> None:
    from featcomp.storage import add_storage_option_argument

    parser.add_argument("store", help="store directory or fsspec URL")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_storage_option_argument(parser)


def main_info(args: argparse.Namespace) -> int:
    from featcomp.store.reader import open_store
    from featcomp.storage import storage_options_from_args

    st = open_store(args.store, storage_options=storage_options_from_args(args))
    info = st.info()
    failures = [{"id": r.get("id"), "path": r.get("path"), "error": r.get("error"), "writer": r.get("writer")}
                for r in st.failures()]
    if args.json:
        print(json.dumps({**info, "failures": len(failures), "failed_videos": failures}, indent=2, sort_keys=True))
        return 0

    def fmt(x, spec=",.1f"):
        return "n/a" if x is None else format(x, spec)

    print(f"store            {info['store']}")
    print(f"format           featcomp.store v{info['format_version']} ({info['mode']}), tables {str(info['digest'])[:16]}")
    print(f"entropy model    {info['codec_kind'] or 'none (raw ' + str(info.get('raw_dtype') or 'float16') + ' + zstd)'}")
    if info.get("rate_levels"):
        print(f"rate levels      {info['rate_levels']} (a level per frame, stored in levels/)")
    print(f"videos           {info['videos']:,}")
    print(f"frames           {info['frames']:,}")
    print(f"frame shape      {info['sample_shape']}")
    print(f"bytes            {info['bytes']:,} = per-frame data {info['data_bytes']:,} + fixed {info['fixed_bytes']:,} "
          f"(header and tables {info['header_bytes']:,}, index {info['index_bytes']:,}, "
          f"shard indexes {info['shard_index_bytes']:,}, other {info['other_bytes']:,})")
    print(f"bits per frame   {fmt(info['bits_per_frame'])} of per-frame data "
          f"({fmt(info['total_bits_per_frame'])} counting the fixed bytes)")
    if info.get("ratio_vs_backbone_float16"):
        print(f"ratio            {info['ratio_vs_backbone_float16']:.1f}x smaller than float16 backbone features "
              f"({info['backbone_float16_bytes']:,} bytes); {info['backbone_ratio_on_disk']:.1f}x counting the fixed bytes")
    what = "latents" if info["mode"] == "coded" else "features"
    print(f"vs float16 {what:<7s} {fmt(info['ratio_vs_float16'], '.2f')}x smaller than the stored {what} as float16 "
          f"({fmt(info['float16_bytes'], ',.0f')} bytes); {fmt(info['ratio_on_disk'], '.2f')}x counting the fixed bytes")
    print(f"failures         {info['failures']}")
    if info.get("partial"):
        print(f"partial          {info['partial']} (truncated files, decodable part kept; featcomp verify lists them)")
    for r in failures:
        print(f"  FAILED {r['id']}  {r['path']}: {r['error']}")
    return 0


def configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="store directory or fsspec URL")
    parser.add_argument("--compact", action="store_true",
                        help="after a clean check, fold index logs/files into one (safe with live writers on local disks)")
    parser.add_argument("--no-live-writers", action="store_true",
                        help="with --compact on object storage: no writer is running, so fold commit logs too "
                             "(object stores have no locks to tell live writers from finished ones)")
    from featcomp.storage import add_storage_option_argument

    add_storage_option_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON: counts and problems [{file, video, problem}]")


def main_verify(args: argparse.Namespace) -> int:
    from featcomp.store.verify import describe, verify_store
    from featcomp.storage import storage_options_from_args

    report = verify_store(args.store, compact=args.compact, storage_options=storage_options_from_args(args),
                          include_remote_logs=getattr(args, "no_live_writers", False))
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True) if getattr(args, "json", False) else describe(report))
    return 0 if report.ok else 1


def configure_repair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="store directory or fsspec URL")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be done; write nothing")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON: damaged, recovered, lost_videos, lost_writers, moved")
    from featcomp.storage import add_storage_option_argument

    add_storage_option_argument(parser)
    parser.epilog = ("Rebuilds the index from intact index files, commit-log lines and closed writers' video tables; "
                     "checks every kept video's data again; moves every replaced file to repair/<id>/ (nothing is "
                     "deleted) with a report.json that `featcomp verify` reads. Stop writers first on object stores. "
                     "Exit status 0: repaired or nothing to repair; 1: videos were lost (re-run the job to write them).")


def main_repair(args: argparse.Namespace) -> int:
    from featcomp.store.repair import describe_repair, repair_store
    from featcomp.storage import storage_options_from_args

    rep = repair_store(args.store, dry_run=args.dry_run, storage_options=storage_options_from_args(args))
    print(json.dumps(rep.to_dict(), indent=2, sort_keys=True) if args.json else describe_repair(rep))
    return 1 if (rep.lost_videos or rep.lost_writers or rep.unnamed) else 0
