"""Peer baseline: the reconstructed EmotioNet CNNs trained with JAX on CPU (same XLA compiler).
Usage: peer_jax.py MODEL SIZE BATCH STEPS  -> prints images/s and step ms (median of steps after warmup)."""
# Provenance: written by the emotionet project's benchmark sessions (issue 13)
# as the peer baselines of `make bench`, kept here unchanged but for this
# note so that CI and users have them. Run by bench/interleave.py.
import sys, time, json
import numpy as np
import jax, jax.numpy as jnp

model, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
convs = [32, 64] if model == "face" else [32, 64, 92]
classes = 2 if model == "face" else 3

def init(key):
    params = []
    cin, s = 1, size
    for c in convs:
        key, k = jax.random.split(key)
        params.append((jax.random.normal(k, (5, 5, cin, c)) * (2 / (25 * cin)) ** 0.5, jnp.zeros(c)))
        cin, s = c, s // 2
    flat = s * s * cin
    key, k1, k2 = jax.random.split(key, 3)
    params.append((jax.random.normal(k1, (flat, 1024)) * (2 / flat) ** 0.5, jnp.zeros(1024)))
    params.append((jax.random.normal(k2, (1024, classes)) * (1 / 1024) ** 0.5, jnp.zeros(classes)))
    return params

def forward(params, x, key):
    for w, b in params[:-2]:
        x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        x = jax.nn.relu(x)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape(x.shape[0], -1)
    w, b = params[-2]
    x = jax.nn.relu(x @ w + b)
    keep = jax.random.bernoulli(key, 0.6, x.shape)
    x = jnp.where(keep, x / 0.6, 0)
    w, b = params[-1]
    return x @ w + b

def loss(params, x, y, key):
    logits = forward(params, x, key)
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, classes), -1))

@jax.jit
def step(params, x, y, key):
    l, g = jax.value_and_grad(loss)(params, x, y, key)
    return jax.tree.map(lambda p, g: p - 0.001 * g, params, g), l

params = init(jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
x = jnp.asarray(rng.random((batch, size, size, 1), dtype=np.float32))
y = jnp.asarray(rng.integers(0, classes, batch))
key = jax.random.PRNGKey(1)
t = time.perf_counter(); params, l = step(params, x, y, key); l.block_until_ready(); compile_s = time.perf_counter() - t
times = []
for i in range(steps):
    t = time.perf_counter(); params, l = step(params, x, y, key); l.block_until_ready(); times.append(time.perf_counter() - t)
med = float(np.median(times))
print(json.dumps({"peer": "jax", "model": model, "size": size, "batch": batch, "step_ms": med * 1e3, "images_per_s": batch / med, "compile_s": compile_s, "devices": str(jax.devices())}))
