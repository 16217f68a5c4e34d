"""Where a suite stands; reads records and running markers, runs nothing.

usage: python -m harness.status suite=<name> [key=value | key=a,b ...]

  suite=<name>   a grid in conf/suite/; the same overrides as the `harness.sweep` that launched it
                 (paths.results_dir=..., method=wanda,magnitude, ...) select the same cells

Each cell is one of: done | failed | missing | queued (claimed by a sweep, its job has not started;
with the Slurm job id once known) | running (with its current stage, how long it has been in it,
the latest step such as `prune sparsegpt 12/30, ETA 4m10s`, pid, host and Slurm job id) | stale (a
marker left by a process that died) | invalid (a cell the grid names but validation rejects, never
launched).
Exit status: 0 when every valid cell is done, 1 otherwise, 2 for a bad suite."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from harness.env import configure_offline
    from harness.sweep import (DONE, INVALID, HelpRequested, SuiteError, expand_suite, format_table,
                               parse_args, summary, usage)

    configure_offline(True)
    try:
        opts, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
        suite = expand_suite(opts["suite"], overrides)
    except HelpRequested:
        print(usage(__doc__))
        return 0
    except SuiteError as exc:
        print(f"prunebench: suite error: {exc}", file=sys.stderr)
        return 2
    print(format_table(suite))
    print(f"prunebench: suite {suite.name} ({suite.results_dir}): {summary(suite)}")
    return 0 if all(c.state in (DONE, INVALID) for c in suite.cells) else 1


if __name__ == "__main__":
    sys.exit(main())
