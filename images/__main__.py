"""``python3 -m images RECIPE`` builds a guest image (cached) and prints its path last on stdout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_APT, EXIT_BUILD, EXIT_NOT_BUILT, EXIT_TOOL, EXIT_USAGE, EXIT_VERIFY, RecipeError, \
    cache_root, recipes

EPILOG = f"""\
The cache is ${{HVM_CACHE:-~/.cache/hvm}} (now {cache_root()}).  Packages come from the host's
`apt-get download` and are checked against `apt-cache show`; nothing is installed.

exit status: 0 done; {EXIT_NOT_BUILT} image not built yet (path); {EXIT_USAGE} usage error;
{EXIT_VERIFY} a download failed verification; {EXIT_APT} apt or the network is unusable;
{EXIT_BUILD} a build step failed; {EXIT_TOOL} a needed host tool is missing."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with EX_USAGE like hvm's own CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per recipe, plus ``path`` and ``list``."""
    known = recipes()
    p = _Parser(prog="python3 -m images", description="Build real guest images for hvm from Debian packages.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="cache directory (default: $HVM_CACHE or ~/.cache/hvm)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for r in known.values():
        sub.add_parser(r.name, help=f"build: {r.summary}", description=f"Build (or reuse) the {r.name} "
                       f"image and print its path.  {r.summary}.")
    path = sub.add_parser("path", help="print the path of a built image (exit 1 if not built)")
    path.add_argument("recipe", choices=sorted(known))
    sub.add_parser("list", help="list the recipes")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    known = recipes()
    try:
        if args.command == "list":
            for r in known.values():
                print(f"{r.name:<12} {r.summary}")
            return 0
        if args.command == "path":
            print(known[args.recipe].path(args.cache))
            return 0
        print(known[args.command].build(args.cache))
        return 0
    except RecipeError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
