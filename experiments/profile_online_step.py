"""Issue 16: where an online learning step's time goes (image patches, d = 64, k = 256, float32).

Times, in one process and interleaved, a jitted chunk of 20 steps of `Online.step` and its parts
(codes, statistics, atom sweeps, revival, step_info) for minibatches of 256 training patches,
with the dictionary after a few hundred steps. Usage: python experiments/profile_online_step.py
"""

import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp

sys.path.insert(0, "benchmarks")
from learning import initial_dictionary, load_patches  # noqa: E402

from sparsedict._coding._codes import solve_codes  # noqa: E402
from sparsedict._dictionary import revive_dead_atoms, update_atoms  # noqa: E402
from sparsedict._learning._chunks import scan_minibatches  # noqa: E402
from sparsedict._learning._metrics import step_info  # noqa: E402
from sparsedict._learning._online import Online  # noqa: E402

LAM = 0.16723
train, _, _ = load_patches(50_000, 500)
X = jnp.asarray(train, jnp.float32)
D0 = jnp.asarray(initial_dictionary(train, 256), jnp.float32)
b, steps = 256, 20
lam = jnp.float32(LAM)
batches = X[: steps * b].reshape(steps, b, 64)

chunk = eqx.filter_jit(scan_minibatches)


def warm(learner, n=300):
    state = learner.init(X, D0)
    for i in range(n // steps):
        s = (i * steps * b) % (50_000 - steps * b)
        state, _ = chunk(
            learner, lam, jnp.float32(1e-4), state, X[s : s + steps * b].reshape(steps, b, 64)
        )
    return state


def timeit(f, *args, reps=3):
    jax.block_until_ready(f(*args))
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best.append(time.perf_counter() - t0)
    return min(best) / steps * 1e3  # ms per step


def main():
    base = Online(solver=sys.argv[1] if len(sys.argv) > 1 else "fista", memory=25_000.0)
    state = warm(base)
    D, AtA, AtX = state.D, state.AtA, state.AtX
    print("load", open("/proc/loadavg").read().strip())
    for solver in ("fista", "active_set"):
        for tol in (1e-4, 1e-3, 1e-2):
            t = jnp.float32(tol)

            @jax.jit
            def codes(batches, D, t=t, solver=solver):
                def one(c, x):
                    r = solve_codes(x, D, lam, solver=solver, tol=t, max_steps=1000, polished=False)
                    return c, (r.codes, r.steps)

                return jax.lax.scan(one, 0, batches)[1]

            ms = timeit(codes, batches, D)
            _, st = codes(batches, D)
            mean = float(jnp.mean(st))
            print(f"codes {solver:10s} tol={tol:g}: {ms:7.2f} ms/step  mean steps {mean:.1f}")
    A = solve_codes(batches[0], D, lam, tol=jnp.float32(1e-4), polished=False).codes
    mask = jnp.ones(256, bool)

    @jax.jit
    def atoms(D, AtA, AtX):
        return jax.lax.scan(
            lambda D, _: (update_atoms(D, AtA, AtX, mask, sweeps=4), 0), D, None, length=steps
        )[0]

    @jax.jit
    def atoms1(D, AtA, AtX):
        return jax.lax.scan(
            lambda D, _: (update_atoms(D, AtA, AtX, mask, sweeps=1), 0), D, None, length=steps
        )[0]

    @jax.jit
    def stats(batches, A, AtA, AtX):
        def one(c, x):
            a, ax = c
            return (0.9 * a + A.T @ A / b, 0.9 * ax + A.T @ x / b), 0

        return jax.lax.scan(one, (AtA, AtX), batches)[0]

    @jax.jit
    def revive(batches, D, A):
        def one(D, x):
            return revive_dead_atoms(D, x - A @ D, jnp.diagonal(AtA), lam, mask)[0], 0

        return jax.lax.scan(one, D, batches)[0]

    @jax.jit
    def info(batches, D, A):
        return jax.lax.scan(lambda c, x: (c, step_info(x, D, A, lam, mask)), 0, batches)[1]

    print(f"atoms 4 sweeps: {timeit(atoms, D, AtA, AtX):7.2f} ms/step")
    print(f"atoms 1 sweep:  {timeit(atoms1, D, AtA, AtX):7.2f} ms/step")
    print(f"statistics:     {timeit(stats, batches, A, AtA, AtX):7.2f} ms/step")
    print(f"revive:         {timeit(revive, batches, D, A):7.2f} ms/step")
    print(f"step_info:      {timeit(info, batches, D, A):7.2f} ms/step")
    for solver in ("fista", "active_set"):
        learner = Online(solver=solver, memory=25_000.0)

        def full(s, learner=learner):
            return chunk(learner, lam, jnp.float32(1e-4), s, batches)

        print(f"full step {solver}, tol 1e-4: {timeit(full, state):7.2f} ms/step")
    print("load", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
