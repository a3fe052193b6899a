"""Ask TensorFlow for parity fixtures: tests/fixtures/tf_parity_{f32,f64}.npz and tf_samplers.npz.

Loss cases (random, fixed seeds): a small problem (B <= 6 rows, C <= 40 classes, d <= 5, K <= 12), its sampled
values from one of TF's own candidate samplers (log-uniform, uniform or fixed-unigram, unique or with
replacement), accidental hits planted on purpose (also on ids drawn more than once) and, for num_true >= 2,
duplicate true labels in some rows. Each case is run through tf.nn.sampled_softmax_loss or tf.nn.nce_loss
with remove_accidental_hits on or off; the fixture keeps TF's per-example losses and the gradients of their
sum with respect to inputs, weights and biases. tests/test_tf_parity.py replays them with softmaxlab.

Sampler cases: TF's samplers' (sampled, true_expected_count, sampled_expected_count), for checking that
softmaxlab's TF-named samplers use TF's expected-count formula in both of its branches.

Needs TensorFlow (`pip install tensorflow-cpu`, the `tf` extra):
    python scripts/make_tf_fixtures.py              # writes the three files (about a minute)
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
N_CASES = 640  # loss cases, split between float32 and float64
N_SAMPLER_CASES = 120
SAMPLERS = ("log_uniform", "uniform", "fixed_unigram")


def sampler_params(sampler: str, C: int, rng) -> dict:
    if sampler != "fixed_unigram":
        return {}
    reserved = int(rng.integers(0, 3))
    return dict(unigrams=rng.integers(1, 50, size=C - reserved).astype(np.float64),
                distortion=np.float64(rng.choice([1.0, 0.75, 0.5])), num_reserved_ids=np.int64(reserved))


def draw(tf, sampler: str, params: dict, labels, num_true, K, C, unique, seed):
    """TF's sampled values for labels (B, num_true); the draw itself does not depend on the labels."""
    tf.random.set_seed(seed)
    kw = dict(true_classes=tf.constant(labels), num_true=num_true, num_sampled=K, unique=unique, range_max=C,
              seed=seed)
    if sampler == "log_uniform":
        return tf.random.log_uniform_candidate_sampler(**kw)
    if sampler == "uniform":
        return tf.random.uniform_candidate_sampler(**kw)
    return tf.random.fixed_unigram_candidate_sampler(**kw, unigrams=params["unigrams"].tolist(),
                                                     distortion=float(params["distortion"]),
                                                     num_reserved_ids=int(params["num_reserved_ids"]))


def loss_case(tf, i: int, dtype: str) -> dict:
    rng = np.random.default_rng(i)
    B, d, num_true = int(rng.integers(2, 7)), int(rng.integers(2, 6)), int(rng.integers(1, 5))
    C = int(rng.integers(14, 41))  # > K: unique draws need K <= C
    K = int(rng.integers(2, 13))
    unique = bool(rng.integers(0, 2))
    sampler = SAMPLERS[i % 3] if i % 4 else "log_uniform"  # TF's default sampler in half of the cases
    kind = "nce" if i % 3 == 2 else "softmax"
    remove_hits = bool(rng.integers(0, 4))  # on in 3 of 4 cases: that is where the rules differ
    params = sampler_params(sampler, C, rng)
    low = int(params.get("num_reserved_ids", 0))  # reserved ids have q = 0: TF's loss would be inf there
    labels = rng.integers(low, C, size=(B, num_true)).astype(np.int64)
    ids = draw(tf, sampler, params, labels, num_true, K, C, unique, i)[0].numpy()
    # accidental hits: rows take sampled ids as labels, preferring ids drawn more than once
    vals, counts = np.unique(ids, return_counts=True)
    for r in range(B):
        if rng.random() < 0.6:
            pick = vals[counts > 1] if (counts > 1).any() and rng.random() < 0.7 else ids
            labels[r, int(rng.integers(0, num_true))] = int(rng.choice(pick))
        if num_true >= 2 and rng.random() < 0.3:
            labels[r, 1] = labels[r, 0]  # a duplicate true label
    # the planted labels' counts: TF's sampler rerun with the same seeds draws the same ids
    sv = draw(tf, sampler, params, labels, num_true, K, C, unique, i)
    assert (sv[0].numpy() == ids).all(), "TF's draw changed with the labels"
    sampled_values = (sv[0].numpy(), sv[1].numpy().astype(dtype), sv[2].numpy().astype(dtype))
    inputs = rng.standard_normal((B, d)).astype(dtype)
    weights = (0.7 * rng.standard_normal((C, d))).astype(dtype)
    biases = (0.3 * rng.standard_normal(C)).astype(dtype)
    x, w, b = tf.Variable(inputs), tf.Variable(weights), tf.Variable(biases)
    fn = tf.nn.nce_loss if kind == "nce" else tf.nn.sampled_softmax_loss
    with tf.GradientTape() as tape:
        loss = fn(weights=w, biases=b, labels=tf.constant(labels), inputs=x, num_sampled=K, num_classes=C,
                  num_true=num_true, sampled_values=tuple(tf.constant(v) for v in sampled_values),
                  remove_accidental_hits=remove_hits)
        total = tf.reduce_sum(loss)
    gx, gw, gb = (tf.convert_to_tensor(g).numpy() for g in tape.gradient(total, [x, w, b]))
    return dict(inputs=inputs, weights=weights, biases=biases, labels=labels, sampled=sampled_values[0],
                true_expected_count=sampled_values[1], sampled_expected_count=sampled_values[2],
                num_true=np.int64(num_true), remove_accidental_hits=np.bool_(remove_hits), unique=np.bool_(unique),
                kind=np.str_(kind), sampler=np.str_(sampler), loss=loss.numpy(), d_inputs=gx, d_weights=gw,
                d_biases=gb)


def sampler_case(tf, i: int) -> dict:
    """TF's counts for a draw; small range_max with a large K forces collisions (num_tries > K), a large range
    with a small K often has none (num_tries == K: TF's K q shortcut)."""
    rng = np.random.default_rng(10**5 + i)
    sampler = SAMPLERS[i % 3]
    num_true = int(rng.integers(1, 4))
    big = 2000 if sampler == "fixed_unigram" else 10**5  # the unigram table is stored: keep it small
    C, K = (int(rng.integers(20, 60)), int(rng.integers(8, 16))) if i % 2 else (big, int(rng.integers(2, 6)))
    labels = rng.integers(0, C, size=(int(rng.integers(1, 5)), num_true)).astype(np.int64)
    params = sampler_params(sampler, C, rng)
    sv = draw(tf, sampler, params, labels, num_true, K, C, True, i)
    return dict(sampler=np.str_(sampler), range_max=np.int64(C), num_sampled=np.int64(K), labels=labels,
                sampled=sv[0].numpy(), true_expected_count=sv[1].numpy(), sampled_expected_count=sv[2].numpy(),
                **(params or dict(unigrams=np.zeros(0), distortion=np.float64(1.0), num_reserved_ids=np.int64(0))))


def pack(cases: list[dict]) -> dict:
    """Cases as few arrays (an npz entry costs ~300 bytes): per field, the cases' values flattened and
    concatenated, and their shapes (-1 padded)."""
    out = {}
    for k in cases[0]:
        vals = [np.asarray(c[k]) for c in cases]
        shapes = np.full((len(vals), 3), -1, dtype=np.int64)
        for i, v in enumerate(vals):
            shapes[i, : v.ndim] = v.shape
        out[k] = np.concatenate([v.reshape(-1) for v in vals])
        out[k + "__shape"] = shapes
    return out


def unpack(npz) -> list[dict]:
    """The inverse of pack, for the tests: one dict of arrays per case, in order."""
    fields = [k for k in npz.files if k + "__shape" in npz.files]
    cases = None
    for k in fields:
        flat, shapes = npz[k], npz[k + "__shape"]
        cases = cases or [{} for _ in shapes]
        offset = 0
        for case, shape in zip(cases, shapes):
            shape = tuple(int(n) for n in shape if n >= 0)
            n = int(np.prod(shape)) if shape else 1
            case[k] = flat[offset: offset + n].reshape(shape)
            offset += n
    return cases


def save(name: str, arrays: dict) -> None:
    path = os.path.join(FIXTURES, name)
    fd, tmp = tempfile.mkstemp(dir=FIXTURES, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    print(f"{path}: {os.path.getsize(path)} bytes")


def main() -> int:
    import tensorflow as tf

    os.makedirs(FIXTURES, exist_ok=True)
    meta = dict(tf_version=np.str_(tf.__version__))
    for dtype in ("float32", "float64"):
        start = 0 if dtype == "float32" else N_CASES // 2
        cases = [loss_case(tf, i, dtype) for i in range(start, start + N_CASES // 2)]
        save(f"tf_parity_f{dtype[5:]}.npz", dict(pack(cases), **meta))
    save("tf_samplers.npz", dict(pack([sampler_case(tf, i) for i in range(N_SAMPLER_CASES)]), **meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
