"""Print prediction vs published figure for every usable validation row, with the error.

Usage: python scripts/validate.py [--breakdown]
"""

from __future__ import annotations

import argparse

from emulator.validation import evaluate_all, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--breakdown", action="store_true", help="also print the predicted step breakdown")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = ap.parse_args()
    results = evaluate_all()
    if args.markdown:
        print("| row | GPU | precision | kind | published | published step s | predicted step s | error |")
        print("|---|---|---|---|---|---:|---:|---:|")
        for r in results:
            kind = "MoE" if r.moe else "dense"
            print(f"| {r.id} | {r.gpu} | {r.precision} | {kind} | {r.metric} {r.published_value:g} "
                  f"| {r.published_step_s:.3f} | {r.predicted_step_s:.3f} | {r.error:+.1%} |")
        s = summary(results)
        print(f"\n{int(s['rows'])} rows: mean |error| {s['mean_abs_error']:.2%}, max |error| {s['max_abs_error']:.2%}")
        return
    print(f"{'row':46s} {'gpu':5s} {'prec':4s} {'kind':5s} {'metric':22s} {'published':>10s} "
          f"{'pub step s':>11s} {'pred step s':>11s} {'error':>7s}")
    for r in results:
        print(f"{r.id:46s} {r.gpu:5s} {r.precision:4s} {'moe' if r.moe else 'dense':5s} {r.metric:22s} "
              f"{r.published_value:10.1f} {r.published_step_s:11.3f} {r.predicted_step_s:11.3f} {r.error:+7.1%}")
        if args.breakdown:
            parts = ", ".join(f"{k}={v:.3f}" for k, v in r.breakdown_s.items() if v > 0)
            print(f"{'':46s} {parts}")
    s = summary(results)
    print(f"\nrows: {int(s['rows'])}   mean |error|: {s['mean_abs_error']:.2%}   max |error|: {s['max_abs_error']:.2%}")


if __name__ == "__main__":
    main()
