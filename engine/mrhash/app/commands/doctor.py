"""`mrhash doctor`: check that every runtime requirement of the engine loads (exit 0 only then)."""

from __future__ import annotations

import argparse
import sys

from mrhash.outputs import outputs_checked


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check the engine's environment: every requirement, the backbone "
                       "weights, GDAL/PROJ and the torch device (exit 1 if anything fails)")
    doctor.add_argument("--json", help="write the report here as JSON ('-': stdout)")
    doctor.set_defaults(func=run_doctor)


@outputs_checked()
def run_doctor(args: argparse.Namespace) -> int:
    from mrhash.app.cli import write_json
    from mrhash.app.doctor import check

    report = check()
    if args.json:
        write_json(args.json, report.to_result())
    if args.json != "-":
        print(f"mrhash {report.engine} · Python {report.python} · {report.executable}")
        for package, version in report.packages.items():
            print(f"  {package:34} {version or 'MISSING'}")
        print(f"  GDAL {report.gdal} · PROJ {report.proj} · CUDA "
              f"{'available' if report.cuda_available else 'not available'}")
        for problem in report.problems:
            print(f"problem: {problem.package or problem.module}: {problem.message}",
                  file=sys.stderr)
        print("engine OK" if report.ok else "engine NOT usable", file=sys.stderr)
    return 0 if report.ok else 1
