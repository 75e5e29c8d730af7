"""FD_inf (the suite's fit: 15 subsets from N/10 to N) against the true Fréchet distance, by synthetic set size N.

Gaussian features (D = 64 by default) mixed by one random matrix; a 20,000-sample reference; synthetic samples of
the same distribution (true FD 0) and shifted by 0.3 in the latent space (true FD printed). Per N: mean FID, mean
FD_inf, the spread of FD_inf over seeds and its mean stated error. Shows where the suite withholds FD_inf
(:func:`evaluators.metrics.fd_infinity.min_samples`: fewer than 10 x D synthetic images).

    python benchmarks/fd_inf_sample_size.py [--dim 64] [--seeds 4]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import command_line, machine_line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=4)
    a = ap.parse_args()
    from evaluators.metrics.fd_infinity import fd_infinity, min_samples

    d = a.dim
    mix = np.random.default_rng(0).normal(size=(d, d)) / np.sqrt(d)

    def gauss(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
        return (np.random.default_rng(seed).normal(size=(n, d)) + shift) @ mix

    ref = gauss(20_000, 99)
    print(f"command: `{command_line()}`\n{machine_line()}\n")
    print(f"D = {d}; the suite withholds FD_inf below {min_samples(d)[0]:,} synthetic images\n")
    print("| true FD | N | N / D | FID | FD_inf (mean over seeds) | spread over seeds | stated error | withheld |")
    print("|---|---|---|---|---|---|---|---|")
    for shift in (0.0, 0.3):
        true = float(((shift * np.ones(d)) @ mix) @ ((shift * np.ones(d)) @ mix))
        for n in (d // 2, d, 3 * d, 5 * d, 10 * d, 23 * d):
            runs = [fd_infinity(ref, gauss(n, s, shift), seed=s) for s in range(a.seeds)]
            fid, val, err = (np.array([r[k] for r in runs]) for k in ("FID", "FD_inf", "FD_inf_err"))
            print(f"| {true:.2f} | {n} | {n / d:.1f} | {fid.mean():.3f} | {val.mean():.3f} | {val.std():.3f} | "
                  f"{err.mean():.3f} | {'yes' if n < min_samples(d)[0] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
