"""``emulate-report RUN_DIR [RUN_DIR ...] [--out DIR]``: an HTML report with plots of emulate runs.

Every directory under the given paths that holds a ``summary.json`` is one run (a Hydra multirun
directory gives all its jobs). The report goes to ``report/`` inside the first path unless ``--out``
says otherwise. Bad input is one line on stderr naming the path, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
PROG = "emulate-report"


class BadInputError(Exception):
    """Input the report cannot use; the message is the one line printed."""


def _natural_key(path: Path) -> list[object]:
    """Sort ``2/`` before ``10/`` (Hydra numbers multirun jobs)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", str(path))]


def find_runs(paths: list[Path]) -> list[Path]:
    """Every run directory (one with a summary.json) under ``paths``, in order, without repeats."""
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        if not given.exists():
            raise BadInputError(f"{given}: no such directory")
        if not given.is_dir():
            raise BadInputError(f"{given}: not a directory (expected an emulate run or multirun directory)")
        if (given / "summary.json").is_file():
            runs = [given]
        else:
            runs = []
            for root, dirs, files in os.walk(given):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                if "summary.json" in files:
                    runs.append(Path(root))
            runs.sort(key=_natural_key)
        if not runs:
            raise BadInputError(f"{given}: no summary.json found (not an emulate run or multirun directory)")
        for run in runs:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                found.append(run)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write an HTML report (index.html with embedded PNG figures, and the PNGs) of emulate runs: "
                    "a summary table, the nominal step-time and memory breakdowns, a GPU-type comparison "
                    "(H100 vs H200) when the runs differ by GPU type or a cluster mixes types, and for fleet "
                    "runs the step time, power and slowest GPUs over the emulated wall time.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="an emulate output directory (with summary.json) or a multirun directory "
                             "(every subdirectory with a summary.json is one run)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write index.html and the PNGs (default: report/ inside the first RUN_DIR)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the path of index.html")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    run_dirs = find_runs(list(args.run_dirs))
    # matplotlib is imported only once the input is known to be good (a bad path answers at once)
    from emulator.report.html import write_report  # noqa: PLC0415
    from emulator.report.plots import RunData, assign_labels  # noqa: PLC0415

    runs = []
    for d in run_dirs:
        try:
            runs.append(RunData.load(d))
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
    assign_labels(runs)
    out_dir = args.out if args.out is not None else args.run_dirs[0] / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir}: exists and is not a directory")

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"  {msg}", file=sys.stderr)

    if not args.quiet:
        print(f"{PROG}: {len(runs)} run{'s' if len(runs) != 1 else ''}", file=sys.stderr)
    for r in runs:
        if r.fleet is not None:
            try:
                _ = r.tables
            except (OSError, ValueError) as exc:
                raise BadInputError(f"{r.path}: cannot read the Arrow tables ({str(exc).splitlines()[0]})") from None
    try:
        return write_report(runs, out_dir, progress=say)
    except OSError as exc:
        raise BadInputError(f"{out_dir}: cannot write the report ({exc.strerror or exc})") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = run(args)
    except BadInputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    print(path)


if __name__ == "__main__":
    main()
