"""Build the MrHash engine's environment headless (administrators deploying to many machines).

    python3 -m mrhash_qgis.setup_engine --target DIR [--device cpu|cuda] [--find-links DIR]
                                        [--index-url URL] [--python PATH] [--fresh]

Run it with only the unzipped plugin on PYTHONPATH (no QGIS needed). It prints progress, and
exits 0 only once the new engine answered; then point the plugin at it (MrHash › Settings ›
Use another Python: DIR/bin/python, or DIR\\Scripts\\python.exe on Windows), or build it in the
profile's default place (`--target default --profile DIR`). DIR/bin/mrhash is the engine's CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrhash_qgis.core.environment import (
    BUILD_DEVICES,
    SetupError,
    SetupOptions,
    default_target,
    env_python,
    inspect_env,
    remove_env,
    setup_engine,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mrhash_qgis.setup_engine",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True,
                        help="folder of the environment ('default': the profile's, see --profile)")
    parser.add_argument("--profile", type=Path,
                        help="QGIS profile folder, for --target default "
                             "(e.g. ~/.local/share/QGIS/QGIS3/profiles/default)")
    parser.add_argument("--device", default="auto", choices=BUILD_DEVICES,
                        help="torch build: cuda when an NVIDIA GPU is present (auto), or force one")
    parser.add_argument("--find-links", default="",
                        help="folder of wheels: install offline, from this folder only")
    parser.add_argument("--index-url", default="", help="package index to use instead of PyPI")
    parser.add_argument("--python", default="", help="base Python (default: found automatically)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete what is in the target first (default: repair in place)")
    parser.add_argument("--status", action="store_true", help="only say what is in the target")
    parser.add_argument("--remove", action="store_true", help="delete the environment")
    args = parser.parse_args(argv)
    if args.target == "default":
        if not args.profile:
            parser.error("--target default needs --profile")
        target = default_target(args.profile.expanduser())
    else:
        target = Path(args.target).expanduser()
    try:
        if args.remove:
            remove_env(target)
            print(f"removed {target}")
            return 0
        if args.status:
            state = inspect_env(target)
            print(f"{state.state}: {state.message}")
            return 0 if state.state == "ready" else 1
        options = SetupOptions(target=target, python=args.python, device=args.device,
                               find_links=args.find_links, index_url=args.index_url,
                               fresh=args.fresh)
        stamp = setup_engine(options, progress=lambda f, m: print(f"{f:4.0%} {m}", flush=True))
    except SetupError as error:
        print(f"setup_engine: error [{error.code}]: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("setup_engine: interrupted; the environment is incomplete and will not be used",
              file=sys.stderr)
        return 130
    print(f"engine ready: {env_python(target)} (mrhash {stamp['engine']}, torch {stamp['torch']}"
          f", {stamp['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
