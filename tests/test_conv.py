"""populax's convolution (issue 15): same values and gradients as flax's, gradients canonical inside a scan."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.agents.nets import Conv


@pytest.mark.parametrize("shape,kernel,stride,features", [
    ((2, 84, 84, 4), 8, 4, 8),   # Nature CNN layer 1
    ((2, 20, 20, 8), 4, 2, 8),   # layer 2
    ((2, 10, 10, 4), 3, 1, 16),  # MinAtar
    ((2, 11, 11, 3), 4, 3, 5),   # the stride leaves input rows unread
])
def test_values_and_gradients_equal_flax_conv(shape, kernel, stride, features):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    ours, ref = Conv(features, (kernel, kernel), strides=(stride, stride)), nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding="VALID")
    params = ref.init(jax.random.key(0), x)
    assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)  # checkpoints unchanged

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    np.testing.assert_allclose(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(ours), (0, 1)))(params, x)),
                    jax.tree.leaves(jax.jit(jax.grad(loss(ref), (0, 1)))(params, x))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gradient_convolutions_stay_canonical_inside_a_scan():
    """XLA:CPU runs non-canonical convolutions (what jax's own gradient leaves inside a loop) as naive loops."""
    x = jnp.ones((2, 10, 10, 4))
    module = Conv(16, (3, 3))
    params = module.init(jax.random.key(0), x)

    def step(p, _):
        grads = jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(p)
        return jax.tree.map(lambda a, g: a - 1e-3 * g, p, grads), None

    text = jax.jit(lambda p: jax.lax.scan(step, p, length=2)[0]).lower(params).compile().as_text()
    labels = [line.split("dim_labels=")[1].split(",")[0] for line in text.splitlines() if " convolution(" in line]
    assert labels and set(labels) == {"b01f_01io->b01f"}, labels
