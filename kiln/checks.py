"""Pass/fail bounds on a comparison with ONNX Runtime (``--atol/--rtol/--min-agreement``: a CI
gate for ``kiln csim`` and ``kiln run``) and the JSON forms the ``--json`` commands print.

Each bound is checked on every output it applies to:

- ``--atol A``: max |backend - ONNX Runtime| <= A;
- ``--rtol R``: that error divided by max |ONNX Runtime| (the output's scale) <= R;
- ``--min-agreement P``: argmax agreement >= P (a fraction, 0..1), on outputs shaped (N, classes).

A failed bound makes the command exit with code 1 (a user error stays 2).
"""

from __future__ import annotations

import json
import math
import sys

from kiln.errors import KilnError

EXIT_CHECK_FAILED = 1


def add_check_options(parser) -> None:
    g = parser.add_argument_group("pass/fail bounds against ONNX Runtime (exit 1 when one fails)")
    g.add_argument("--atol", type=float, metavar="A", help="max abs error of every output must be <= A")
    g.add_argument("--rtol", type=float, metavar="R", help="max abs error / max |reference| of every output "
                   "must be <= R")
    g.add_argument("--min-agreement", type=float, metavar="P", help="argmax agreement of every (N, classes) "
                   "output must be >= P (a fraction, e.g. 0.99)")


def check_bound_options(args) -> bool:
    """Validate the bounds before any work; True when at least one is given."""
    given = [(flag, v) for flag, v in (("--atol", args.atol), ("--rtol", args.rtol),
                                       ("--min-agreement", args.min_agreement)) if v is not None]
    for flag, v in given:
        if not math.isfinite(v) or v < 0:
            raise KilnError(f"{flag} {v} must be a finite number >= 0")
    if args.min_agreement is not None and args.min_agreement > 1:
        raise KilnError(f"--min-agreement {args.min_agreement} is a fraction between 0 and 1 (e.g. 0.99 for 99%)")
    if given and args.no_compare:
        raise KilnError(f"{', '.join(f for f, _ in given)} bound the comparison with ONNX Runtime; "
                        "drop --no-compare")
    return bool(given)


def check_bounds(rows, args) -> list[str]:
    """One line per output and bound that failed (empty: all hold)."""
    failures = []
    for r in rows:
        if args.atol is not None and not r.max_abs_error <= args.atol:
            failures.append(f"output {r.name!r}: max abs error {r.max_abs_error:.3e} > --atol {args.atol:g}")
        if args.rtol is not None and not r.relative_error <= args.rtol:
            failures.append(f"output {r.name!r}: relative error {r.relative_error:.3e} > --rtol {args.rtol:g}")
        if args.min_agreement is not None and r.argmax_agreement is not None \
                and not r.argmax_agreement >= args.min_agreement:
            failures.append(f"output {r.name!r}: argmax agreement {100 * r.argmax_agreement:.2f}% < "
                            f"--min-agreement {100 * args.min_agreement:g}%")
    if args.min_agreement is not None and all(r.argmax_agreement is None for r in rows):
        raise KilnError("--min-agreement needs an output shaped (N, classes); this model's outputs have no "
                        "argmax: use --atol/--rtol")
    return failures


def gate(rows, args) -> tuple[int, dict | None]:
    """Exit code (0 or 1) and the JSON "checks" entry; prints the verdict to stderr."""
    if rows is None or all(getattr(args, k) is None for k in ("atol", "rtol", "min_agreement")):
        return 0, None
    failures = check_bounds(rows, args)
    for line in failures:
        print(f"kiln: check failed: {line}", file=sys.stderr)
    if not failures:
        bounds = ", ".join(f"{flag} {v:g}" for flag, v in (("--atol", args.atol), ("--rtol", args.rtol),
                                                           ("--min-agreement", args.min_agreement))
                           if v is not None)
        print(f"kiln: checks passed ({bounds}) on {len(rows)} output(s)", file=sys.stderr)
    bounds = {"atol": args.atol, "rtol": args.rtol, "min_agreement": args.min_agreement}
    return (EXIT_CHECK_FAILED if failures else 0), {"bounds": bounds, "passed": not failures, "failures": failures}


def comparison_json(rows) -> list[dict] | None:
    if rows is None:
        return None
    return [{"name": r.name, "max_abs_error": _num(r.max_abs_error), "relative_error": _num(r.relative_error),
             "scale": _num(r.scale), "argmax_agreement": r.argmax_agreement} for r in rows]


def _num(x: float):
    """JSON has no NaN/Infinity: they become null (a NaN error fails every bound anyway)."""
    return float(x) if math.isfinite(x) else None


def _finite(obj):
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def print_json(obj) -> None:
    """The one thing on stdout with --json (strict JSON: NaN/Infinity become null)."""
    print(json.dumps(_finite(obj), indent=2, allow_nan=False), flush=True)
