"""Issue 16: online learning with capped FISTA minibatch codes (image patches, d=64, k=256, f32).

For each cap on the FISTA steps of a minibatch's codes: ms per training step and the held-out
objective (exact codes) after a number of steps, in one process. Usage:
python experiments/online_code_budget.py [steps] [caps...]
"""

import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, "benchmarks")
from learning import initial_dictionary, load_patches  # noqa: E402

from sparsedict._coding._codes import solve_codes  # noqa: E402
from sparsedict._learning._chunks import scan_minibatches  # noqa: E402
from sparsedict._learning._online import Online  # noqa: E402
from sparsedict._objective import mean_objective  # noqa: E402

LAM = 0.16723
train, test, _ = load_patches(50_000, 2000)
X = np.asarray(train, np.float32)
Xt = jnp.asarray(test)
D0 = jnp.asarray(initial_dictionary(train, 256), jnp.float32)
b, chunk_len = 256, 20
lam = jnp.float32(LAM)
chunk = eqx.filter_jit(scan_minibatches)
rng = np.random.default_rng(0)
order = np.concatenate([rng.permutation(50_000) for _ in range(40)])


def heldout(D):
    D = jnp.asarray(D, jnp.float64)
    A = solve_codes(Xt, D, LAM, solver="fista", tol=1e-6, max_steps=50_000).codes
    return float(mean_objective(Xt, D, A, LAM))


def run(cap, tol, total, marks, solver="fista", batch=b):
    learner = Online(solver=solver, memory=25_000.0, code_max_steps=cap)
    state = learner.init(X, D0)
    t = jnp.float32(tol)
    nb = batch * chunk_len
    chunk(learner, lam, t, state, jnp.asarray(X[order[:nb]].reshape(chunk_len, batch, 64)))
    out, elapsed, step = [], 0.0, 0
    while step < total:
        B = jnp.asarray(X[order[step * batch : step * batch + nb]].reshape(chunk_len, batch, 64))
        t0 = time.perf_counter()
        state, _ = chunk(learner, lam, t, state, B)
        jax.block_until_ready(state.D)
        elapsed += time.perf_counter() - t0
        step += chunk_len
        if step in marks:
            out.append((step, elapsed, heldout(state.D)))
    return out


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    caps = [int(c) for c in sys.argv[2:]] or [1000, 50, 30, 20]
    marks = {total // 4, total // 2, total}
    print("load", open("/proc/loadavg").read().strip(), flush=True)
    for cap in caps:
        tol = 1e-4
        res = run(cap, tol, total, marks)
        line = "  ".join(f"{s} steps: {e:6.2f} s F={f:.5f}" for s, e, f in res)
        print(f"fista cap {cap:5d}: {res[-1][1] / total * 1e3:6.2f} ms/step  {line}", flush=True)
    print("load", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
