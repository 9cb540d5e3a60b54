"""Peer baseline: the reconstructed EmotioNet CNNs trained with TensorFlow/Keras on CPU (the paper's framework).
Usage: peer_keras.py MODEL SIZE BATCH STEPS"""
# Provenance: written by the emotionet project's benchmark sessions (issue 13)
# as the peer baselines of `make bench`, kept here unchanged but for this
# note so that CI and users have them. Run by bench/interleave.py.
import sys, time, json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

model, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
convs = [32, 64] if model == "face" else [32, 64, 92]
classes = 2 if model == "face" else 3
layers = [tf.keras.Input((size, size, 1))]
for c in convs:
    layers += [tf.keras.layers.Conv2D(c, 5, padding="same", activation="relu"), tf.keras.layers.MaxPool2D(2)]
layers += [tf.keras.layers.Flatten(), tf.keras.layers.Dense(1024, activation="relu"), tf.keras.layers.Dropout(0.4), tf.keras.layers.Dense(classes)]
m = tf.keras.Sequential(layers)
opt = tf.keras.optimizers.SGD(0.001)
lossf = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

@tf.function(jit_compile=len(sys.argv) > 5 and sys.argv[5] == "xla")
def step(x, y):
    with tf.GradientTape() as t:
        l = lossf(y, m(x, training=True))
    opt.apply_gradients(zip(t.gradient(l, m.trainable_variables), m.trainable_variables))
    return l

rng = np.random.default_rng(0)
x = tf.constant(rng.random((batch, size, size, 1), dtype=np.float32))
y = tf.constant(rng.integers(0, classes, batch))
t = time.perf_counter(); step(x, y).numpy(); compile_s = time.perf_counter() - t
times = []
for i in range(steps):
    t = time.perf_counter(); step(x, y).numpy(); times.append(time.perf_counter() - t)
med = float(np.median(times))
print(json.dumps({"peer": "keras" + ("-xla" if len(sys.argv) > 5 else ""), "model": model, "size": size, "batch": batch, "step_ms": med * 1e3, "images_per_s": batch / med, "compile_s": compile_s}))
