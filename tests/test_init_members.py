"""Population initialisation never batches a LAPACK QR (it deadlocked XLA:CPU's thread pool)."""

import jax
import numpy as np

from populax.population import init_members


def orthogonal_member(key, hparams):
    keys = jax.random.split(key, 4)
    return [jax.nn.initializers.orthogonal(hparams)(k, (32, 32)) for k in keys]


def test_init_members_compiles_a_loop_without_batched_qr_and_matches_each_member():
    keys = jax.random.split(jax.random.key(0), 4)
    scales = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    init = init_members(orthogonal_member)
    hlo = init.lower(keys, scales).as_text()
    assert "while" in hlo  # a compiled loop over members, not a vmap
    stacked = init(keys, scales)
    for member in range(4):
        alone = orthogonal_member(keys[member], scales[member])
        for got, want in zip(stacked, alone):
            np.testing.assert_allclose(got[member], want, rtol=1e-5, atol=1e-6)
            # orthogonal up to the member's own scale
            np.testing.assert_allclose(got[member].T @ got[member], scales[member] ** 2 * np.eye(32), atol=1e-4)
