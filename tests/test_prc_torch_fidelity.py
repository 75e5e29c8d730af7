"""Our PRDC precision/recall against torch-fidelity 0.4.0's ``prc`` (Kynkaanniemi et al. 2019), after its fix.

torch-fidelity 0.4.0 is the first release with precision/recall; its convention is input 1 = generated,
input 2 = real (precision: generated samples inside a real k-NN ball; recall: the reverse), radii the (k+1)-th
smallest distance counting the point itself, ``<=``. Ours (Naeem et al.'s prdc) uses ``<``: the two differ only
on exact ties, which continuous features do not have.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.metrics.fidelity import prdc

prc = pytest.importorskip("torch_fidelity.metric_prc")


@pytest.mark.parametrize(("shift", "scale", "k"), [(0.0, 1.0, 3), (0.7, 1.0, 3), (0.3, 0.5, 5), (1.5, 2.0, 3)])
@pytest.mark.parametrize("save_cpu_ram", [False, True])
def test_precision_recall_equal_torch_fidelity(shift, scale, k, save_cpu_ram):
    rng = np.random.default_rng(int(shift * 10 + k))
    real = rng.normal(size=(150, 16))
    fake = rng.normal(loc=shift, scale=scale, size=(120, 16))
    ours = prdc(real, fake, k=k)
    ref = prc.prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=k,
                                     prc_batch_size=64, save_cpu_ram=save_cpu_ram, verbose=False)
    assert ours["precision"] == pytest.approx(ref["precision"], abs=1e-6)  # torch-fidelity averages in float32; one sample is 1/150
    assert ours["recall"] == pytest.approx(ref["recall"], abs=1e-6)  # torch-fidelity averages in float32; one sample is 1/150
    if shift >= 0.7:  # a real test: the sets differ, so precision and recall are not both 1
        assert min(ref["precision"], ref["recall"]) < 0.95
    # swapping the sides swaps precision and recall (the fixed convention: generated first)
    swapped = prc.prc_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), prc_neighborhood=k,
                                         prc_batch_size=64, save_cpu_ram=save_cpu_ram, verbose=False)
    assert swapped["precision"] == pytest.approx(ref["recall"], abs=1e-6)  # torch-fidelity averages in float32; one sample is 1/150
