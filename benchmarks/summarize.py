"""Condense `python -m rustasync bench --json FILE` output into the README's tables.

python benchmarks/summarize.py results.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _fmt_target(t) -> str:
    if t in (None, ""):
        return ""
    return t if isinstance(t, str) else f">= {t:g}x"


def main(path: str) -> None:
    data = json.load(open(path))
    rows = data["results"]
    loops = sorted({r["loop"] for r in rows}, key=lambda x: x != "asyncio")
    print(f"Machine: {data['machine']}; ratio = stock asyncio time / rustasync time.\n")

    core = [r for r in rows if "stock_median_s" in r]
    if core:
        print("**sleep and gather** (medians of interleaved rounds)\n")
        print("| workload | target | " + " | ".join(f"ratio ({lp})" for lp in loops) + " | notes |")
        print("|---|---|" + "---|" * len(loops) + "---|")
        by = defaultdict(dict)
        for r in core:
            by[r["workload"]][r["loop"]] = r
        for w, per in by.items():
            any_r = next(iter(per.values()))
            notes = "; ".join(
                f"{lp}: " + ", ".join(f"{k} {v} (stock/rust)" for k, v in r["extra"].items())
                for lp, r in per.items()
                if r.get("extra")
            )
            cells = " | ".join(f"{per[lp]['ratio']:.2f}x" if lp in per else "" for lp in loops)
            print(f"| {w} | {_fmt_target(any_r['target'])} | {cells} | {notes} |")
        print()

    queue = [r for r in rows if "ns_per_item" in r]
    if queue:
        impls = [
            i
            for i in ("rustasync", "janus", "culsans", "aiologic")
            if any(r["impl"] == i for r in queue)
        ]
        print("**queues** (ratio vs asyncio.Queue on the same loop; peers are their async sides)\n")
        head = " | ".join(f"{i} ({lp})" for lp in loops for i in impls)
        print(f"| workload | target | {head} |")
        print("|---|---|" + "---|" * (len(loops) * len(impls)))
        by = defaultdict(dict)
        tgt = {}
        for r in queue:
            by[r["workload"]][(r["loop"], r["impl"])] = r["ratio"]
            if r["impl"] == "rustasync":
                tgt[r["workload"]] = r["target"]
        for w, per in by.items():
            cells = " | ".join(
                f"{per[(lp, i)]:.2f}x" if (lp, i) in per else "-" for lp in loops for i in impls
            )
            print(f"| {w} | {_fmt_target(tgt.get(w))} | {cells} |")
        print()

    chan = [r for r in rows if "speedup" in r]
    if chan:
        print("**Channel, bridge, asyncq engine** (speedup vs the baseline row of each workload)\n")
        print(
            "| workload | implementation | "
            + " | ".join(f"rate ({lp})" for lp in loops)
            + " | "
            + " | ".join(f"speedup ({lp})" for lp in loops)
            + " | target |"
        )
        print("|---|---|" + "---|" * (2 * len(loops)) + "---|")
        by = defaultdict(dict)
        for r in chan:
            by[(r["workload"], r["impl"])][r["loop"]] = r
        for (w, impl), per in by.items():
            any_r = next(iter(per.values()))
            rates = " | ".join(
                f"{per[lp]['rate']:.3g} {per[lp]['unit']}" if lp in per else "" for lp in loops
            )
            sp = " | ".join(
                f"{per[lp]['speedup']:.2f}x" if lp in per and per[lp]["speedup"] else ""
                for lp in loops
            )
            print(f"| {w} | {impl} | {rates} | {sp} | {_fmt_target(any_r['target'])} |")


if __name__ == "__main__":
    main(sys.argv[1])
