#!/usr/bin/env python3
"""Turns bench/results/*.json (written by the kv-* programs) into tables and plots.

    plot.py --results bench/results [--doc docs/benchmarks.md]

Writes into the results directory:
  updates_per_s.png   updates/s per system, one group of bars per workload
  recovery_ms.png     time from starting a fresh process to the first correct read
  pause_vs_heap.png   snapshot pause against heap size: amber's checkpoint capture,
                      fork() (Redis's latest_fork_usec, and fork of the plain map),
                      the stop-the-world dump
  table.md            the Markdown tables
and, with --doc, replaces the text between the GENERATED markers of that file.
Only the standard library and matplotlib (Debian: python3-matplotlib).
"""

import argparse
import glob
import json
import math
import os
import sys

BEGIN = "<!-- BEGIN GENERATED: scripts/bench-peers.sh -->"
END = "<!-- END GENERATED: scripts/bench-peers.sh -->"

# Display order: amber first, then the peers roughly from fastest to slowest.
ORDER = ["amber", "amber-noverify", "map", "map-dump", "lmdb", "redis-rdb", "redis-aof",
         "rocksdb", "sqlite", "pmdk"]
WORKLOADS = ["kv-update", "kv-update-zipf", "kv-update-large"]
# Systems that are not persistent peers for the "x best peer" column.
NOT_PEERS = {"amber", "amber-noverify", "map"}
COLORS = {"amber": "#d98c00", "amber-noverify": "#f2b64c", "map": "#9e9e9e",
          "map-dump": "#616161", "lmdb": "#3f7fbf", "redis-rdb": "#c0392b",
          "redis-aof": "#e57373", "rocksdb": "#7b4fa0", "sqlite": "#2e8b57", "pmdk": "#8d6e63"}


def load(results_dir):
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            print(f"plot.py: skipping {path}: {e}", file=sys.stderr)
            continue
        if "system" in r and "workload" in r:
            runs.append(r)
    return runs


def rank(system):
    return ORDER.index(system) if system in ORDER else len(ORDER)


def workloads_of(runs):
    seen = {r["workload"] for r in runs}
    return [w for w in WORKLOADS if w in seen] + sorted(seen - set(WORKLOADS))


def fmt_int(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def mb(v):
    return "–" if v is None else f"{v / 1e6:,.0f}"


def best_peer(rows, key, lower_is_better=False):
    vals = [r.get(key) for r in rows if r["system"] not in NOT_PEERS and r.get("persistent")]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return min(vals) if lower_is_better else max(vals)


def table(runs):
    out = []
    for w in workloads_of(runs):
        rows = sorted([r for r in runs if r["workload"] == w], key=lambda r: rank(r["system"]))
        first = rows[0]
        dist = first.get("distribution", "uniform")
        if dist == "zipf":
            dist = f"Zipf({first.get('zipf_theta', 0.99)})"
        out.append(f"### {w}: {first['keys']:,} keys, {first['updates_requested']:,} "
                   f"{dist} overwrites requested\n")
        best = best_peer(rows, "updates_per_s")
        out.append("| system | updates/s | × best peer | load s | device MB | write ampl. | "
                   "peak RSS MB | disk MB | recovery ms | max stall ms | pause ms (median / max) "
                   "| verified |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            ups = r.get("updates_per_s")
            ratio = f"{ups / best:.2f}" if best and ups else "–"
            capped = " (time-capped)" if r.get("updates_time_capped") else ""
            pause = "–"
            if r.get("pause_ms_median") is not None:
                pause = f"{fmt(r['pause_ms_median'])} / {fmt(r.get('pause_ms_max'))}"
            elif r.get("fork_ms_median") is not None:
                pause = f"fork {fmt(r['fork_ms_median'])} / {fmt(r.get('fork_ms_max'))}"
            ok = "yes" if r.get("ok") else "**NO**"
            if r.get("recovery_verify") == "sample":
                ok += " (sample)"
            wa = r.get("write_amplification")
            out.append(
                f"| {r['system']} | {fmt_int(ups)}{capped} | {ratio} | {fmt(r.get('load_s'))} | "
                f"{mb(r.get('device_write_bytes')) if r.get('persistent') else '–'} | "
                f"{fmt(wa, 2)} | {mb(r.get('peak_rss_bytes'))} | "
                f"{mb(r.get('disk_bytes')) if r.get('persistent') else '–'} | "
                f"{fmt(r.get('recovery_ms'), 0)} | {fmt(r.get('max_stall_ms'))} | {pause} | {ok} |")
        loads = sorted({r.get("loadavg_at_start") for r in rows if r.get("loadavg_at_start")})
        reps = sorted({r.get("repeats", 1) for r in rows})
        note = (f"\nRun {first.get('date', '?')[:10]}, kernel {first.get('kernel', '?')}, "
                f"{first.get('cpus', '?')} CPUs; repetitions: {', '.join(map(str, reps))} "
                f"(medians)")
        if loads:
            note += f"; load average at the start of the update phase: {loads[0]}–{loads[-1]}"
        out.append(note + ".\n")
    return "\n".join(out)


def targets(runs):
    """The issue's targets, checked against the numbers."""
    lines = []
    for w in workloads_of(runs):
        rows = [r for r in runs if r["workload"] == w]
        amber = next((r for r in rows if r["system"] == "amber"), None)
        if amber is None:
            continue
        best = best_peer(rows, "updates_per_s")
        best_sys = next((r["system"] for r in rows
                         if r.get("updates_per_s") == best and r["system"] not in NOT_PEERS), "?")
        wa_best = best_peer(rows, "write_amplification", lower_is_better=True)
        wa_sys = next((r["system"] for r in rows if r.get("write_amplification") == wa_best
                       and r["system"] not in NOT_PEERS), "?")
        if best:
            x = amber["updates_per_s"] / best
            lines.append(f"- {w}: amber {amber['updates_per_s']:,.0f} updates/s = {x:.2f}× the best "
                         f"persistent peer ({best_sys}, {best:,.0f}/s); target ≥ 3× — "
                         f"{'met' if x >= 3 else 'not met'}.")
        if wa_best is not None and amber.get("write_amplification") is not None:
            a = amber["write_amplification"]
            lines.append(f"- {w}: amber write amplification {a:.2f}, best peer {wa_best:.2f} "
                         f"({wa_sys}) — {'met' if a <= wa_best else 'not met'}.")
    rec = [(r["keys"], r.get("recovery_ms"), r["workload"]) for r in runs
           if r["system"] == "amber" and r.get("recovery_ms") is not None
           and r.get("distribution") == "uniform"]
    if len(rec) >= 2:
        rec.sort()
        (k0, r0, _), (k1, r1, _) = rec[0], rec[-1]
        lines.append(f"- recovery: amber {r0:,.0f} ms at {k0:,} keys, {r1:,.0f} ms at {k1:,} keys "
                     f"({k1 / k0:.0f}× the data, {r1 / r0:.1f}× the time).")
    return "\n".join(lines)


def plots(runs, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib missing (apt-get install python3-matplotlib): no PNGs",
              file=sys.stderr)
        return []
    written = []
    ws = workloads_of(runs)
    systems = sorted({r["system"] for r in runs}, key=rank)

    def bars(key, ylabel, title, name, persistent_only=False):
        fig, ax = plt.subplots(figsize=(10, 4.8))
        shown = [s for s in systems if not persistent_only or
                 any(r["system"] == s and r.get(key) is not None for r in runs)]
        width = 0.8 / max(1, len(shown))
        for i, s in enumerate(shown):
            xs, ys = [], []
            for j, w in enumerate(ws):
                r = next((r for r in runs if r["system"] == s and r["workload"] == w), None)
                if r is not None and r.get(key) is not None and r.get(key) > 0:
                    xs.append(j + (i - (len(shown) - 1) / 2) * width)
                    ys.append(r[key])
            if xs:
                ax.bar(xs, ys, width, label=s, color=COLORS.get(s))
        ax.set_yscale("log")
        ax.set_xticks(range(len(ws)))
        labels = []
        for w in ws:
            r = next(r for r in runs if r["workload"] == w)
            labels.append(f"{w}\n{r['keys']:,} keys")
        ax.set_xticklabels(labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    bars("updates_per_s", "updates per second (log)",
         "kv-update: 8-byte keys, 100-byte values, one thread, recoverable within 1 s",
         "updates_per_s.png")
    bars("recovery_ms", "ms from process start to first correct read (log)",
         "Recovery after kill -9 (cold page cache)", "recovery_ms.png", persistent_only=True)

    # Pause against heap size.
    fig, ax = plt.subplots(figsize=(8, 4.8))
    series = {}
    for r in runs:
        s = r["system"]
        if r.get("pause_ms_median") is not None and r.get("heap_bytes"):
            label = {"amber": "amber checkpoint pause", "amber-noverify": "amber checkpoint pause",
                     "redis-rdb": "fork() in Redis (RDB)", "redis-aof": "fork() in Redis (AOF rewrite)",
                     "map-dump": "stop-the-world dump"}.get(s, s)
            series.setdefault(label, []).append(
                (r["heap_bytes"], r["pause_ms_median"], r.get("pause_ms_max"), COLORS.get(s)))
        if r.get("fork_ms_median") is not None and r.get("fork_rss_bytes"):
            series.setdefault("fork() of the plain map", []).append(
                (r["fork_rss_bytes"], r["fork_ms_median"], r.get("fork_ms_max"), COLORS.get("map")))
    markers = "os^vDPX*"
    for i, (label, pts) in enumerate(sorted(series.items())):
        pts.sort()
        xs = [p[0] / 2**20 for p in pts]
        ys = [p[1] for p in pts]
        up = [max(0, (p[2] or p[1]) - p[1]) for p in pts]
        ax.errorbar(xs, ys, yerr=[[0] * len(ys), up], fmt=markers[i % len(markers)],
                    label=label + " (median, bar to max)", color=pts[0][3], capsize=3)
    if series:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [t for t in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
                 if min(p[0] for v in series.values() for p in v) / 2**20 / 2 <= t
                 <= max(p[0] for v in series.values() for p in v) / 2**20 * 2]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("heap / dataset in memory (MiB, log)")
        ax.set_ylabel("pause (ms, log)")
        ax.set_title("Snapshot pause against heap size (update phase; one point per run)")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "pause_vs_heap.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--doc", help="Markdown file whose GENERATED section is replaced")
    args = ap.parse_args()
    runs = load(args.results)
    if not runs:
        print(f"plot.py: no results in {args.results}", file=sys.stderr)
        return 1
    text = table(runs)
    t = targets(runs)
    if t:
        text += "\nAgainst the targets of issue 5:\n\n" + t + "\n"
    images = plots(runs, args.results)
    with open(os.path.join(args.results, "table.md"), "w") as f:
        f.write(text)
    print(text)
    if args.doc:
        with open(args.doc) as f:
            doc = f.read()
        if BEGIN not in doc or END not in doc:
            print(f"plot.py: {args.doc} has no GENERATED markers", file=sys.stderr)
            return 1
        rel = os.path.relpath(args.results, os.path.dirname(os.path.abspath(args.doc)))
        figs = "\n".join(f"![{os.path.basename(p)}]({rel}/{os.path.basename(p)})" for p in images)
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(args.doc, "w") as f:
            f.write(head + BEGIN + "\n\n" + text + "\n" + figs + "\n\n" + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
