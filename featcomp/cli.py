"""The ``featcomp`` command.

Each subcommand lives in the module of the area that owns it and exposes two functions:
``configure(parser: argparse.ArgumentParser) -> None`` and ``main(args: argparse.Namespace) -> int``.
Those modules keep heavy imports (torch, ray, decord) inside functions, so ``featcomp --help`` and
``featcomp info`` stay fast. ``extract`` is the one command that launches a Ray job: it imports
``featcomp.pipelines.extract`` when run (see docs/decisions.md, "The CLI launches pipelines").
"""

from __future__ import annotations

import argparse
import importlib
import sys

from featcomp.errors import FeatcompError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("featcomp.pipelines.extract",
                "extract features from many videos into a store (Ray job): compressed with --model, raw float16 "
                "backbone features with --backbone"),
    "train": ("featcomp.train.commands", "train a compressibility head on cached features or a --raw store"),
    "refit-temporal": ("featcomp.train.refit_commands",
                       "fit a temporal codec to a factorized head's own latents (same features, fewer bits)"),
    "compress": ("featcomp.model_commands", "compress one clip with a model file"),
    "transcode": ("featcomp.collection_commands",
                  "code a raw feature store with a model into a coded store (no video decoding)"),
    "import": ("featcomp.collection_commands",
               "bring per-video .npy/.h5 features (video_features layout) into a raw store, timestamps from --fps"),
    "info": ("featcomp.store.commands", "summarize a feature store: videos, frames, bytes, bits per frame"),
    "verify": ("featcomp.store.commands", "check every chunk of a store decodes and the index agrees"),
    "repair": ("featcomp.store.commands",
               "rebuild a damaged store's index from what remains, move damaged files aside, name lost videos"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``featcomp`` parser. ``only``: configure that subcommand alone (the others are listed but their
    modules not imported), which keeps ``featcomp CMD ...`` and ``featcomp --help`` from importing the
    modules of the other commands."""
    from featcomp import __version__

    parser = argparse.ArgumentParser(
        prog="featcomp",
        description=(
            "Extract CNN features from video and store them entropy-coded, an order of magnitude "
            "smaller, with a compressibility head trained for the task they serve."
        ),
    )
    parser.add_argument("--version", action="version", version=f"featcomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # a missing optional part must not break the other commands
            p.set_defaults(_unavailable=f"{name}: unavailable ({e})")
            continue
        attr = name.replace("-", "_")
        configure = getattr(mod, "configure_" + attr, None) or getattr(mod, "configure")
        run = getattr(mod, "main_" + attr, None) or getattr(mod, "main")
        configure(p)
        p.set_defaults(_run=run)
    return parser


def _command_of(argv: list[str]) -> str:
    """The subcommand named in ``argv`` ("" when none: top-level help or version)."""
    for a in argv:
        if not a.startswith("-"):
            return a
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = _command_of(argv)
    parser = build_parser(only=cmd if cmd in COMMANDS else ("" if not cmd else None))
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(f"featcomp {args._unavailable}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        try:
            return int(args._run(args) or 0)
        except ModuleNotFoundError as e:
            from featcomp.errors import _EXTRA_OF, missing_extra

            if (e.name or "").split(".")[0] not in _EXTRA_OF:
                raise
            raise missing_extra(e, f"featcomp {args.command}") from None
    except FeatcompError as e:
        print(f"featcomp {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the environment, not featcomp: a full disk, a permission, a path that is a file
        print(f"featcomp {args.command}: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"featcomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
