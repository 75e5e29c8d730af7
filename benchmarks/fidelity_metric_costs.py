"""The fidelity suite's wall time on the demo world before and after the metrics of issue #22 joined the registry.

``run_fidelity`` (demo@train as the reference set, demo@test as the "synthetic" set, per pathology, alignment off)
with the feature cache warm, so the time is the metrics' (what adding a metric can slow down). "before" runs with
FD_inf and Vendi unregistered (the suite of #21: FID, KID, PRDC), "after" with everything registered and the
default selection, "all" with the opt-in metrics too; each at bootstrap 0 and ``--bootstrap`` resamples. Then the
cost of each registered feature-matrix metric on the overall sets and on one per-pathology-sized set.

    python benchmarks/fidelity_metric_costs.py --encoder demo --bootstrap 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from _common import chexgen_home, command_line, machine_line, markdown_table, quiet_warning


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="demo")
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting (the fastest is reported)")
    a = ap.parse_args()
    print(machine_line())
    print(command_line())
    if quiet_warning():
        print(quiet_warning())
    import numpy as np

    from evaluators.fidelity import run_fidelity
    from evaluators.imagesets import load_image_set
    from evaluators.metrics import registry

    with tempfile.TemporaryDirectory() as tmp, chexgen_home(tmp):
        real, syn = load_image_set("demo@train"), load_image_set("demo@test")
        base = dict(encoders=[a.encoder], per_pathology=True, alignment=False, min_count=10)
        run_fidelity(real, syn, **base)  # warm the feature cache
        registry.discover()
        saved = {n: registry.get(n) for n in ("FD_inf", "Vendi")}

        def timed(boot: int, include=()) -> tuple[float, dict]:
            best, res = float("inf"), None
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                res = run_fidelity(real, syn, bootstrap=boot, include=include, **base)
                best = min(best, time.perf_counter() - t0)
            return best, res

        rows = []
        for boot in sorted({0, a.bootstrap}):
            for n in saved:
                registry.unregister(n)
            t_before, _ = timed(boot)
            with registry._LOCK:
                registry._REGISTRY.update(saved)
            t_after, res = timed(boot)
            t_all, _ = timed(boot, include=registry.opt_in())
            rows.append([boot, f"{t_before:.2f}", f"{t_after:.2f}", f"{t_after / t_before:.2f}",
                         f"{t_all:.2f}" if registry.opt_in() else "-"])
        ev = sum("skipped" not in r for r in res["per_pathology"])
        print(f"\nrun_fidelity, warm cache, {len(real)} real / {len(syn)} synthetic images, encoder {a.encoder}, "
              f"per pathology ({ev} rows evaluated), seconds (fastest of {a.repeats}):")
        print(markdown_table(["bootstrap", "before (#21)", "after (default)", "after / before", "with opt-in"], rows))

        from evaluators.encoders import load_encoder
        from evaluators.features import extract_features

        enc = load_encoder(a.encoder)
        fr = extract_features(list(real.paths), enc).features
        fs = extract_features(list(syn.paths), enc).features
        rng = np.random.default_rng(0)
        small = (fr[rng.choice(len(fr), 60, replace=False)], fs[rng.choice(len(fs), 30, replace=False)])
        rows = []
        for m in registry.selected("fidelity", encoder=a.encoder, include=registry.opt_in()):
            cost = []
            for r, s in ((fr, fs), small):
                t0 = time.perf_counter()
                m.compute({"real": r, "synthetic": s}, {"seed": 0, "kid_subsets": 100, "k": 5})
                cost.append(time.perf_counter() - t0)
            rows.append([m.name, f"{cost[0] * 1000:.1f}", f"{cost[1] * 1000:.1f}", "yes" if m.ci else "no",
                         "yes" if m.opt_in else "no"])
        print(f"\nper metric, ms ({len(fr)} x {len(fs)}, and 60 x 30), {fr.shape[1]}-d {a.encoder} features:")
        print(markdown_table(["metric", "overall", "60 x 30", "in bootstrap", "opt-in"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
