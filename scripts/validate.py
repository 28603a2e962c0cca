"""Print prediction vs published figure for every usable validation row, with the error.

The summaries count every row but the excluded ones (a publisher-acknowledged regression), which
are printed with their error and their reason at the end.

Usage: python scripts/validate.py [--breakdown] [--markdown] [--row ID]
"""

from __future__ import annotations

import argparse
import os
import sys

from emulator.validation import (
    RowResult,
    counted,
    ep_dispatch_rows,
    evaluate,
    evaluate_all,
    imbalance_rows,
    load_rows,
    op_table,
    summary,
    unstated_errors,
)


def groups(results: list[RowResult]) -> dict[str, list[RowResult]]:
    """The rows as a whole and by kind, GPU, precision, source family, and GPU x precision x kind."""
    out: dict[str, list[RowResult]] = {"all": results, "dense": [r for r in results if not r.moe],
                                       "MoE": [r for r in results if r.moe]}
    for gpu in sorted({r.gpu for r in results}):
        out[gpu] = [r for r in results if r.gpu == gpu]
    for prec in sorted({r.precision for r in results}):
        out[prec] = [r for r in results if r.precision == prec]
    for family in sorted({r.id.split("_")[0] for r in results}):
        out[family] = [r for r in results if r.id.split("_")[0] == family]
    for gpu, prec, moe in sorted({(r.gpu, r.precision, r.moe) for r in results}):
        out[f"{gpu} {prec} {'MoE' if moe else 'dense'}"] = [
            r for r in results if (r.gpu, r.precision, r.moe) == (gpu, prec, moe)]
    return out


def print_row(row_id: str) -> None:
    rows = {r["id"]: r for r in load_rows()}
    if row_id not in rows:
        raise SystemExit(f"validate.py: error: --row={row_id}: no such row (ids: python scripts/validate.py)")
    row = rows[row_id]
    r = evaluate(row)
    print(f"{r.id}: {r.gpu} {r.precision} {'moe' if r.moe else 'dense'}, published {r.metric} {r.published_value:g} "
          f"= {r.published_step_s:.3f} s/step, predicted {r.predicted_step_s:.3f} s/step, error {r.error:+.1%}"
          + (f" (excluded: {r.excluded})" if r.excluded else ""))
    print("step breakdown, s: " + ", ".join(f"{k}={v:.3f}" for k, v in r.breakdown_s.items() if v > 0))
    table = op_table(row)
    for layer in dict.fromkeys(o.layer for o in table):
        ops = [o for o in table if o.layer == layer]
        total = sum(o.fwd_s + o.bwd_s for o in ops)
        print(f"\n{layer} layer, one micro-batch on one GPU: {total * 1e3:.3f} ms forward + backward")
        print(f"  {'op':22s} {'kind':13s} {'kernels':>7s} {'GFLOP':>9s} {'fwd ms':>8s} {'bwd ms':>8s} {'share':>6s}")
        for o in ops:
            print(f"  {o.name:22s} {o.kind:13s} {o.kernels:7.0f} {o.flops / 1e9:9.2f} {o.fwd_s * 1e3:8.3f} "
                  f"{o.bwd_s * 1e3:8.3f} {(o.fwd_s + o.bwd_s) / total:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--breakdown", action="store_true", help="also print the predicted step breakdown")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    ap.add_argument("--row", metavar="ID", help="one row: its error, step breakdown and per-op layer times")
    args = ap.parse_args()
    if args.row:
        print_row(args.row)
        return
    results = evaluate_all()
    if args.markdown:
        print("| row | GPU | precision | kind | published | published step s | predicted step s | error |")
        print("|---|---|---|---|---|---:|---:|---:|")
        for r in results:
            kind = "MoE" if r.moe else "dense"
            mark = " (excluded)" if r.excluded else ""
            print(f"| {r.id} | {r.gpu} | {r.precision} | {kind} | {r.metric} {r.published_value:g} "
                  f"| {r.published_step_s:.3f} | {r.predicted_step_s:.3f} | {r.error:+.1%}{mark} |")
        print("\n| rows | count | mean abs error | max abs error | bias (mean signed error) |")
        print("|---|---:|---:|---:|---:|")
        for name, rows in groups(counted(results)).items():
            s = summary(rows)
            print(f"| {name} | {int(s['rows'])} | {s['mean_abs_error']:.1%} | {s['max_abs_error']:.1%} "
                  f"| {s['mean_error']:+.1%} |")
        print("\n| counted row beyond 12% | GPU | precision | kind | error |")
        print("|---|---|---|---|---:|")
        for r in sorted((r for r in counted(results) if abs(r.error) > 0.12), key=lambda r: r.error):
            print(f"| {r.id} | {r.gpu} | {r.precision} | {'MoE' if r.moe else 'dense'} | {r.error:+.1%} |")
        for r in (r for r in results if r.excluded):
            print(f"\nExcluded: `{r.id}` ({r.error:+.1%}): {r.excluded}")
        return
    print(f"{'row':46s} {'gpu':5s} {'prec':4s} {'kind':5s} {'metric':22s} {'published':>10s} "
          f"{'pub step s':>11s} {'pred step s':>11s} {'error':>7s}")
    for r in results:
        print(f"{r.id:46s} {r.gpu:5s} {r.precision:4s} {'moe' if r.moe else 'dense':5s} {r.metric:22s} "
              f"{r.published_value:10.1f} {r.published_step_s:11.3f} {r.predicted_step_s:11.3f} {r.error:+7.1%}"
              + ("  (excluded)" if r.excluded else ""))
        if args.breakdown:
            parts = ", ".join(f"{k}={v:.3f}" for k, v in r.breakdown_s.items() if v > 0)
            print(f"{'':46s} {parts}")
    print()
    for name, rows in groups(counted(results)).items():
        s = summary(rows)
        print(f"{name:17s} rows: {int(s['rows']):4d}   mean |error|: {s['mean_abs_error']:6.2%}   "
              f"max |error|: {s['max_abs_error']:6.2%}   bias: {s['mean_error']:+6.2%}")
    print("\nlayout values the source does not state (the row takes the first; *: does not fit in HBM), error:")
    for row in load_rows():
        alts = unstated_errors(row)
        if alts:
            span = ", ".join(f"{k}={v}{'' if fits else '*'}: {e:+.1%}" for k, v, e, fits in alts)
            errs = [e for *_, e, fits in alts if fits]
            inside = bool(errs) and min(errs) <= 0.0 <= max(errs)
            print(f"  {row['id']:44s} {span}" + ("  (published value inside the fitting range)" if inside else ""))
    print("\nexpert-parallel dispatch/combine latency, one direction (arXiv:2603.07685 Table 7; alltoall rows set the"
          "\nall-to-all efficiencies, flex = HybridEP rows are out of sample):")
    for d in ep_dispatch_rows():
        print(f"  {d.gpu:6s} {d.dispatcher:8s} EP{d.ep:<3d} published {d.measured_s * 1e6:7.0f} us   "
              f"predicted {d.predicted_s * 1e6:7.0f} us   {d.ratio - 1.0:+6.1%}")
    print("\ndropless routing's load imbalance implied by forced-balance / dropless pairs"
          "\n(validation/moe_imbalance.yaml, Qwen3-235B-A22B on 256 H100, EP8): the train.moe_load_imbalance"
          "\nthat reproduces each published ratio:")
    for im in imbalance_rows():
        print(f"  seq {im.seq_len:6d}  TP{im.tp} CP{im.cp}  dropless/forced step {im.published_ratio:.3f}  "
              f"implied imbalance {im.implied_imbalance:.2f}")
    excluded = [r for r in results if r.excluded]
    if excluded:
        print(f"\nexcluded from the summaries ({len(excluded)} rows, printed above):")
        for r in excluded:
            print(f"  {r.id} {r.error:+.1%}: {r.excluded}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # output piped into a reader that stopped early (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
