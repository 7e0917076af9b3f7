"""Arrays from anywhere: numpy, JAX, lists and torch tensors reach every public entry through one
converter; float16/bfloat16 are solved in float32, integers in the default float, and complex,
string or object inputs are refused naming the argument.

The reference for each converted input is the same entry called on the numpy float array that
numpy itself makes of it (`np.asarray(..., dtype)`), so a conversion that changes a value, a dtype
or the result type is caught.
"""

import inspect

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from problems import random_problem

import sparsedict as sd
from sparsedict import optimality

LAM = 0.1


@pytest.fixture
def problem():
    return random_problem(np.random.default_rng(0), n=6, d=5, k=7)


def codes(X, D, lam=LAM):
    return sd.sparse_code(X, D, lam).codes


FROM_FLOAT64 = {
    "list": lambda a: a.tolist(),
    "jax": jnp.asarray,
    "numpy float32": lambda a: a.astype(np.float32),
}


@pytest.mark.parametrize("kind", sorted(FROM_FLOAT64))
def test_sparse_code_accepts_lists_and_jax(problem, kind):
    X, D = problem
    convert = FROM_FLOAT64[kind]
    got = codes(convert(X), convert(D))
    dtype = np.float32 if kind == "numpy float32" else np.float64
    want = codes(X.astype(dtype), D.astype(dtype))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


LOW = {
    "numpy float16": lambda a: a.astype(np.float16),
    "numpy bfloat16": lambda a: a.astype(ml_dtypes.bfloat16),
    "jax bfloat16": lambda a: jnp.asarray(a, jnp.bfloat16),
    "jax float16": lambda a: jnp.asarray(a, jnp.float16),
}


@pytest.mark.parametrize("kind", sorted(LOW))
def test_low_precision_is_solved_in_float32(problem, kind):
    X, D = problem
    X_low, D_low = LOW[kind](X), LOW[kind](D)
    got = sd.sparse_code(X_low, D_low, LAM)
    ref = codes(np.asarray(X_low, np.float32), np.asarray(D_low, np.float32))
    assert got.codes.dtype == jnp.float32 and got.gap.dtype == jnp.float32
    np.testing.assert_array_equal(got.codes, ref)
    # one low-precision argument next to a float32 one: still float32
    assert codes(X.astype(np.float32), D_low).dtype == jnp.float32


def test_integer_inputs_use_the_default_float(problem):
    X, _ = problem
    X_int = np.round(10 * X).astype(np.int32)
    D_int = np.eye(5, dtype=np.int64)  # unit atoms
    got = codes(X_int, D_int, lam=1)
    assert got.dtype == jax.dtypes.canonicalize_dtype(jnp.float64)  # float64: x64 is on in tests
    np.testing.assert_allclose(got, np.maximum(X_int - 1.0, 0.0), atol=1e-12)  # closed form
    # integers next to float32: the float decides
    assert codes(X_int, np.eye(5, dtype=np.float32)).dtype == jnp.float32


REFUSED = {
    "complex X": (dict(X="complex"), "X is complex"),
    "complex D": (dict(D="complex"), "D is complex"),
    "string X": (dict(X=np.array([["a", "b"]])), "X must be an array of real numbers"),
    "object lam": (dict(lam=object()), "lam must be an array of real numbers"),
    "ragged X": (dict(X=[[1.0, 2.0], [3.0]]), "X must be an array of numbers"),
    "bool X": (dict(X="bool"), "X must hold numbers"),
    "complex init": (dict(init="complex"), "init is complex"),
}


def _arguments(problem, change):
    X, D = problem
    args = dict(X=X, D=D, lam=LAM, init=np.zeros((X.shape[0], D.shape[0])))
    for name, value in change.items():
        if isinstance(value, str) and value == "complex":
            value = args[name] + 0j
        elif isinstance(value, str) and value == "bool":
            value = args[name] > 0
        args[name] = value
    return args


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_inputs_name_the_argument(problem, case):
    change, message = REFUSED[case]
    args = _arguments(problem, change)
    with pytest.raises(TypeError, match=message):
        sd.sparse_code(args["X"], args["D"], args["lam"], init=args["init"])
    if "init" not in change:  # the other entries share the converter
        with pytest.raises(TypeError, match=message):
            optimality.certify(args["X"], args["D"], args["lam"])
        with pytest.raises(TypeError, match=message):
            sd.wide_limit.gap_to_bound(args["X"], args["D"], args["lam"])


def test_forwarded_options_take_the_documented_defaults_and_name_unknown_ones(problem):
    """`lasso_value` takes `sparse_code`'s options and `train_sae` `learn_dictionary`'s run
    options (their signatures are the one home of the defaults); a typo is named, not ignored."""
    X, D = problem
    values = sd.lasso_value(X, D, LAM, tol=1e-12, max_steps=500, solver="cd")
    result = sd.sparse_code(X, D, LAM, tol=1e-12, max_steps=500, solver="cd")
    np.testing.assert_allclose(values, result.primal, rtol=1e-12)
    with pytest.raises(TypeError, match=r"lasso_value\(\) got unknown option\(s\) \['tolerance'\]"):
        sd.lasso_value(X, D, LAM, tolerance=1e-6)
    # throw is forwarded: one step cannot reach the tolerance
    with pytest.raises(Exception, match="max_steps"):
        sd.lasso_value(X, D, LAM, solver="fista", max_steps=1, throw=True)
    with pytest.raises(TypeError, match=r"train_sae\(\) got unknown option\(s\) \['verbos'\]"):
        sd.train_sae(X, 4, LAM, max_steps=1, verbos=True)
    learn = inspect.signature(sd.learn_dictionary).parameters
    forwarded = ("eval_size", "checkpoint", "shuffle", "shuffle_seed", "prefetch", "verbose")
    for name in (*forwarded, "progress", "devices"):
        assert name in sd.train_sae.__doc__, name
        assert learn[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_learners_accept_lists(problem):
    X, _ = problem
    for learn in (
        lambda X: sd.learn_dictionary(X, 4, LAM, max_steps=3, chunk_size=3).dictionary,
        lambda X: sd.train_sae(X, 4, LAM, max_steps=3, batch_size=4, chunk_size=3).dictionary,
    ):
        np.testing.assert_array_equal(learn(X.tolist()), learn(X))


def test_optimality_entries_accept_lists_and_low_precision(problem):
    X, D = problem
    A = np.asarray(codes(X, D))
    ref = optimality.residuals(X, D, A, LAM)
    got = optimality.residuals(X.tolist(), D.tolist(), A.tolist(), LAM)
    np.testing.assert_array_equal(got.signals.gap, ref.signals.gap)
    low = optimality.residuals(X.astype(np.float16), D, A, LAM, second_order=False)
    assert low.signals.gap.dtype == jnp.float64  # D and codes are float64: the common dtype
    np.testing.assert_array_equal(
        optimality.objective(X.tolist(), D, A, LAM), optimality.objective(X, D, A, LAM)
    )
    np.testing.assert_array_equal(
        optimality.certify(X.tolist(), D.tolist(), LAM).signals.gap,
        optimality.certify(X, D, LAM).signals.gap,
    )
    chunked = optimality.certify_chunked(X.tolist(), D.tolist(), LAM, chunk_size=4)
    np.testing.assert_allclose(chunked.report.signals.gap, ref.signals.gap, atol=1e-12)


# --- torch (CI has no torch: these skip there) ------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_sparse_code_accepts_torch_tensors(problem, torch):
    X, D = problem
    Xt = torch.tensor(X, requires_grad=True)  # detached by the converter
    np.testing.assert_array_equal(codes(Xt, torch.tensor(D)), codes(X, D))
    np.testing.assert_array_equal(
        sd.sparse_code(X, D, torch.tensor(LAM, dtype=torch.float64), init=torch.zeros(6, 7)).codes,
        codes(X, D),
    )
    for dtype in (torch.bfloat16, torch.float16):
        Xl, Dl = torch.tensor(X).to(dtype), torch.tensor(D).to(dtype)
        got = codes(Xl, Dl)
        ref = codes(Xl.float().numpy(), Dl.float().numpy())
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(TypeError, match="X is complex"):
        codes(torch.tensor(X + 1j), D)


def test_every_public_entry_accepts_torch(problem, torch):
    X, D = problem
    Xt, Dt = torch.tensor(X), torch.tensor(D)
    A = np.asarray(codes(X, D))
    At = torch.tensor(A)
    same = np.testing.assert_array_equal
    same(
        optimality.residuals(Xt, Dt, At, torch.tensor(LAM, dtype=torch.float64)).signals.gap,
        optimality.residuals(X, D, A, LAM).signals.gap,
    )
    same(optimality.objective(Xt, Dt, At, LAM), optimality.objective(X, D, A, LAM))
    same(optimality.certify(Xt, Dt, LAM).signals.gap, optimality.certify(X, D, LAM).signals.gap)
    same(
        optimality.certify_chunked(Xt, Dt, LAM, chunk_size=4).report.signals.gap,
        optimality.certify_chunked(X, D, LAM, chunk_size=4).report.signals.gap,
    )
    same(sd.wide_limit.bound(Xt, LAM), sd.wide_limit.bound(X, LAM))
    same(
        sd.learn_dictionary(Xt, 4, LAM, max_steps=3, chunk_size=3).dictionary,
        sd.learn_dictionary(X, 4, LAM, max_steps=3, chunk_size=3).dictionary,
    )
    same(
        sd.learn_dictionary(X, 4, LAM, max_steps=2, init=Dt[:4]).dictionary,
        sd.learn_dictionary(X, 4, LAM, max_steps=2, init=D[:4]).dictionary,
    )
    same(
        sd.train_sae(Xt, 4, LAM, max_steps=3, batch_size=4, chunk_size=3).dictionary,
        sd.train_sae(X, 4, LAM, max_steps=3, batch_size=4, chunk_size=3).dictionary,
    )


def test_sklearn_estimators_accept_torch_and_low_precision(problem, torch):
    from sparsedict.sklearn import NonnegativeDictionaryLearning, NonnegativeSparseCoder

    X, D = problem
    coder = NonnegativeSparseCoder(torch.tensor(D), alpha=LAM)
    np.testing.assert_array_equal(coder.transform(torch.tensor(X)), coder.transform(X))
    low = coder.transform(torch.tensor(X).to(torch.bfloat16))
    assert low.dtype == np.float32
    ref = coder.transform(torch.tensor(X).to(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(low, ref)
    assert coder.transform(X.astype(np.float16)).dtype == np.float32
    learner = NonnegativeDictionaryLearning(3, alpha=LAM, max_iter=3, random_state=0)
    np.testing.assert_array_equal(
        learner.fit(torch.tensor(X)).components_, learner.fit(X).components_
    )
