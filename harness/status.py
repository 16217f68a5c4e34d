"""`python -m harness.status suite=<name> [overrides...]`: each cell of a suite as done / failed /
missing / running (plus `stale`: a marker left by a process that died, and `invalid`: a cell the
grid names but validation rejects, never launched). Reads records and markers; runs nothing.
Exit status: 0 when every valid cell is done, 1 otherwise, 2 for a bad suite."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from harness.env import configure_offline
    from harness.sweep import DONE, INVALID, SKIPPED, SuiteError, expand_suite, format_table, parse_args, summary

    configure_offline(True)
    try:
        opts, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
        suite = expand_suite(opts["suite"], overrides)
    except SuiteError as exc:
        print(f"prunebench: suite error: {exc}", file=sys.stderr)
        return 2
    print(format_table(suite))
    print(f"prunebench: suite {suite.name} ({suite.results_dir}): {summary(suite)}")
    return 0 if all(c.state in (DONE, INVALID, SKIPPED) for c in suite.cells) else 1


if __name__ == "__main__":
    sys.exit(main())
