"""The research sub-commands, which `mrhash` registers when this package is installed
(`app/cli.py`'s EXTENSION_MODULES): `eval` (retrieval mAP / P@10 of MrHash and baselines on a
labelled folder) and `bench <name>` (benchmarks, each in `mrhash_research.benchmarks.<module>`
with `add_arguments(parser)` and `run(args) -> dict`, written as JSON to --json or stdout)."""

from __future__ import annotations

import argparse
import importlib
import sys

from mrhash.app.commands.model import (
    EUROSAT_AUX,
    EUROSAT_PRIMARY,
    add_training_arguments,
    parse_aux_bands,
    progress_printer,
    training_kwargs,
)
from mrhash.errors import BadInput
from mrhash.model.config import option_type
from mrhash.outputs import outputs_checked
from mrhash_contract.bands import parse_bands

# sub-command -> module in mrhash_research.benchmarks
BENCHMARKS = {"read": "read", "search": "search", "index": "indexing", "encoders": "encoders"}


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval", help="retrieval mAP / P@10 of MrHash and baselines on a labelled folder",
        description="DIR holds one sub-folder per class. Every method trains unsupervised on "
        "all images (labels are read only to score); each image queries all others. Scores "
        "are exact expectations over random order inside Hamming-distance ties.")
    ev.add_argument("--dataset", required=True, metavar="DIR")
    ev.add_argument("--bits", default="32,64", help="code lengths (default 32,64)")
    ev.add_argument("--methods", default="mrhash,itq,lsh,float,float224,float_stats",
                    help="among mrhash, itq, lsh, float (cosine on the features at the "
                    "training input size), float224 (at 224 px), float_stats (224 px + every "
                    "band's mean/std) (default: all)")
    ev.add_argument("--seeds", metavar="LIST", help="run every seeded method once per seed "
                    "and report mean ± sample sd, e.g. 0-7 or 0,3,5 (default: --seed)")
    ev.add_argument("--inductive", action="store_true",
                    help="also train on one stratified half and score on the other, unseen "
                    "half (MrHash; next to the same half scored by its own model)")
    ev.add_argument("--R", type=option_type("R", 1, 1_000_000), dest="r",
                    help="cutoff of mAP@R (default: each query's number of relevant "
                    "images)")
    ev.add_argument("--primary-bands", default=EUROSAT_PRIMARY,
                    help=f"primary bands (default {EUROSAT_PRIMARY}: EuroSAT-MS RGB)")
    ev.add_argument("--aux", action="append", metavar="NAME=BANDS",
                    help="auxiliary band groups, repeatable; 'none' for the primary alone "
                    f"(default EuroSAT-MS: {' '.join(EUROSAT_AUX)})")
    ev.add_argument("--json", help="write the results here (default: stdout)")
    add_training_arguments(ev)
    ev.set_defaults(func=run_eval)

    bench = subparsers.add_parser("bench", help="benchmarks (figures for docs/BENCHMARKS.md)")
    names = bench.add_subparsers(dest="benchmark", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"mrhash_research.benchmarks.{module_name}")
        parser = names.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(parser)
        parser.add_argument("--json", help="write the figures to this JSON file")
        parser.set_defaults(func=_runner(module))


def _runner(module):
    @outputs_checked(models=["model"])
    def run(args: argparse.Namespace) -> int:
        from mrhash.app.cli import write_json

        write_json(args.json, module.run(args))
        return 0

    return run


@outputs_checked()
def run_eval(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.device import limit_threads
    from mrhash.jobs import JobControl
    from mrhash.model.train import check_bits

    from mrhash_research.evaluate import evaluate_dataset

    limit_threads()
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError:
        raise BadInput(f"--bits {args.bits!r}: expected numbers like 32,64") from None
    check_bits(bits)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = evaluate_dataset(
        args.dataset, bits, methods, training_kwargs(args), parse_bands(args.primary_bands),
        parse_aux_bands(args.aux if args.aux is not None else EUROSAT_AUX), r=args.r,
        job=JobControl(progress_printer("eval"), min_interval_s=2.0),
        seeds=parse_seeds(args.seeds) if args.seeds else None, inductive=args.inductive)
    write_json(args.json, result)
    for row in result["results"]:
        sd = f" ± {row['map_sd']:.4f}" if row.get("map_sd") is not None else ""
        print(f"{row['method']:>11} {row['bits'] or '-':>4}  mAP {row['map']:.4f}{sd}  "
              f"mAP@R {row['map_at_r']:.4f}  P@10 {row['p_at_10']:.4f}", file=sys.stderr)
    for b, entry in result.get("inductive", {}).get("mrhash", {}).items():
        print(f"inductive mrhash {b:>4}  unseen half mAP {entry['inductive']:.4f}, seen half "
              f"{entry['transductive']:.4f}, gap {entry['gap']:.4f} ({entry['runs']} runs)",
              file=sys.stderr)
    return 0


def parse_seeds(text: str) -> list[int]:
    """"0-7" -> [0, ..., 7]; "0,3,5" -> [0, 3, 5]; ranges and lists mix ("0-2,9")."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, dash, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(part)]
    except ValueError:
        raise BadInput(f"--seeds {text!r}: expected numbers and ranges like 0-7 or 0,3,5"
                       ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise BadInput(f"--seeds {text!r}: expected distinct seeds >= 0, like 0-7")
    return seeds
