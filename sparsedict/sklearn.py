r"""scikit-learn estimators: nonnegative sparse coding and dictionary learning.

- [`NonnegativeSparseCoder`][sparsedict.sklearn.NonnegativeSparseCoder]: a transformer with a
  fixed dictionary (like `sklearn.decomposition.SparseCoder`, codes always nonnegative).
- [`NonnegativeDictionaryLearning`][sparsedict.sklearn.NonnegativeDictionaryLearning]: alternating
  minimisation on all data (like `DictionaryLearning(positive_code=True)`).
- `NonnegativeMiniBatchDictionaryLearning`: online learning (like
  `MiniBatchDictionaryLearning(positive_code=True)`), with `partial_fit`.

**alpha is sparsedict's lam.** Every estimator minimises, per signal,
$\tfrac12\|x - a D\|^2 + \alpha \|a\|_1$, $a \ge 0$, with unit-norm atoms (rows of
`components_`). This is the scaling of scikit-learn's `DictionaryLearning` and
`MiniBatchDictionaryLearning` (`alpha`) and of `SparseCoder(transform_algorithm="lasso_cd",
transform_alpha=alpha)` (which divides by `n_features` before calling `Lasso`, whose loss carries
`1 / (2 n_features)`). It is *not* the scaling of a bare `Lasso(alpha=a)`, whose penalty
corresponds to `alpha = a * n_features` here. scikit-learn constrains atoms to norm at most 1;
sparsedict to exactly 1, which is the same at an optimum (a used atom always wants norm 1,
THEORY 2.4).

Computation runs in JAX: in float64 when float64 is enabled
(`jax.config.update("jax_enable_x64", True)`), else in float32; outputs have the input's dtype.
Inputs may also be JAX arrays or torch tensors; float16 and bfloat16 inputs are upcast to float32
(outputs are then float32).
"""

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validation as check

__all__ = [
    "NonnegativeDictionaryLearning",
    "NonnegativeMiniBatchDictionaryLearning",
    "NonnegativeSparseCoder",
]


def _validate(estimator, X, **kwargs):
    """`validate_data` after the package's converter for what scikit-learn cannot read (torch
    tensors, JAX arrays, float16 and bfloat16, which it would cast to float64)."""
    if check.is_torch_tensor(X) or isinstance(X, jax.Array):
        X = np.asarray(check.as_array(X, "X"))
    if isinstance(X, np.ndarray) and check.low_precision(X.dtype):
        X = X.astype(np.float32)
    return validate_data(estimator, X, dtype=[np.float64, np.float32], **kwargs)


def _check_alpha(alpha):
    if not (isinstance(alpha, int | float) and np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number (sparsedict's lam), got {alpha!r}")
    return float(alpha)


def _encode(X, D, alpha, solver, tol, max_steps):
    """Nonnegative codes of `X` for the atoms `D`, in X's dtype."""
    import sparsedict as sd

    result = sd.sparse_code(X, D, alpha, solver=solver, tol=tol, max_steps=max_steps)
    return np.asarray(result.codes, dtype=X.dtype)


def _tags(tags):
    tags.transformer_tags.preserves_dtype = ["float64", "float32"]
    tags.input_tags.allow_nan = False
    return tags


class NonnegativeSparseCoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Nonnegative sparse codes for a fixed dictionary (`sparsedict.sparse_code`).

    Parameters:
        dictionary: (n_components, n_features) atoms as rows (normalised to unit norm).
        alpha: the L1 penalty, sparsedict's `lam` (see the module docstring for scikit-learn's).
        solver, tol, max_steps: as in `sparsedict.sparse_code`.

    Attributes:
        components_: the unit-norm dictionary; n_components_; n_features_in_ (after `fit`).
        Stateless: `transform` works without `fit`.
    """

    def __init__(self, dictionary, *, alpha=1.0, solver="active_set", tol=None, max_steps=1000):
        self.dictionary = dictionary
        self.alpha = alpha
        self.solver = solver
        self.tol = tol
        self.max_steps = max_steps

    @property
    def components_(self):
        """The dictionary with unit-norm rows (n_components, n_features)."""
        D = np.asarray(check.as_array(self.dictionary, "dictionary"), dtype=float)
        if D.ndim != 2 or D.shape[0] == 0 or D.shape[1] == 0:
            raise ValueError(
                f"dictionary must have shape (n_components, n_features), got {D.shape}"
            )
        norms = np.linalg.norm(D, axis=1, keepdims=True)
        if not np.all(np.isfinite(D)) or np.any(norms == 0):
            raise ValueError("dictionary must be finite with no zero atom")
        return D / norms

    @property
    def n_components_(self):
        return self.components_.shape[0]

    def fit(self, X, y=None):
        """Validate `X` and the parameters; nothing is learned (the coder is stateless)."""
        _validate(self, X)
        _check_alpha(self.alpha)
        return self

    def transform(self, X):
        """Codes (n_samples, n_components) >= 0."""
        X = _validate(self, X, reset=False)
        D = self.components_
        if D.shape[1] != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features but the dictionary has {D.shape[1]}: the dictionary "
                f"must have shape (n_components, {X.shape[1]})"
            )
        alpha = _check_alpha(self.alpha)
        return _encode(X, D.astype(X.dtype), alpha, self.solver, self.tol, self.max_steps)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = _tags(super().__sklearn_tags__())
        tags.requires_fit = False
        return tags


class _DictionaryLearner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared `fit`/`transform` of the dictionary-learning estimators."""

    _method = "alternating"

    def __init__(self, n_components, alpha, max_iter, tol, solver, random_state):
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.random_state = random_state

    def _learn(self, X):
        import sparsedict as sd

        alpha = _check_alpha(self.alpha)
        k = X.shape[1] if self.n_components is None else int(self.n_components)
        if k < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        learned = sd.learn_dictionary(X, k, alpha, seed=seed, **self._options(X))
        self.components_ = np.asarray(learned.dictionary, dtype=X.dtype)
        self.n_components_ = k
        self.n_iter_ = int(learned.steps)
        self.error_ = float(learned.objective)
        return learned

    def fit(self, X, y=None):
        """Learn the dictionary `components_` from `X` (n_samples, n_features)."""
        X = _validate(self, X)
        self._learn(X)
        return self

    def fit_transform(self, X, y=None):
        """Learn the dictionary and return the exact codes of `X` for it."""
        X = _validate(self, X)
        self._learn(X)
        return self.transform(X)

    def transform(self, X):
        """Exact nonnegative codes (n_samples, n_components) for the learned dictionary."""
        check_is_fitted(self)
        X = _validate(self, X, reset=False)
        D = self.components_.astype(X.dtype)
        return _encode(X, D, _check_alpha(self.alpha), self.solver, None, 1000)

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        return _tags(super().__sklearn_tags__())


class NonnegativeDictionaryLearning(_DictionaryLearner):
    """Dictionary learning by alternating minimisation (`sparsedict.learn_dictionary`).

    Parameters:
        n_components: number of atoms (default n_features).
        alpha: the L1 penalty, sparsedict's `lam` (the scaling of scikit-learn's
            `DictionaryLearning(alpha=...)`).
        max_iter: cap on alternating steps. tol: stationarity tolerance (relative to alpha;
            default as in `learn_dictionary`). solver: the coding solver.
        random_state: seeds the initial atoms.

    Attributes:
        components_: (n_components, n_features) unit-norm atoms.
        n_iter_: training steps taken.
        error_: the objective with exact codes, averaged over samples.
    """

    def __init__(
        self, n_components=None, *, alpha=1.0, max_iter=500, tol=None, solver="active_set",
        random_state=None,
    ):  # fmt: skip
        super().__init__(n_components, alpha, max_iter, tol, solver, random_state)

    def _options(self, X):
        return dict(
            method="alternating",
            max_steps=int(self.max_iter),
            stationarity_tol=self.tol,
            solver=self.solver,
        )


class NonnegativeMiniBatchDictionaryLearning(_DictionaryLearner):
    """Online dictionary learning (Mairal et al.; `learn_dictionary(method="online")`).

    Parameters:
        n_components: number of atoms (default n_features). alpha: sparsedict's `lam`.
        batch_size: minibatch size. max_iter: cap on minibatch steps. tol: stationarity
            tolerance. forgetting: the forgetting exponent of the statistics.
        random_state: seeds the initial atoms and the minibatch order.

    `partial_fit(X)` runs one online step on the minibatch `X` (the first call draws the initial
    atoms from it, so it needs at least `n_components` samples).
    """

    def __init__(
        self, n_components=None, *, alpha=1.0, batch_size=256, max_iter=1000, tol=None,
        forgetting=3.0, solver="active_set", random_state=None,
    ):  # fmt: skip
        super().__init__(n_components, alpha, max_iter, tol, solver, random_state)
        self.batch_size = batch_size
        self.forgetting = forgetting

    def _options(self, X):
        return dict(
            method="online",
            max_steps=int(self.max_iter),
            stationarity_tol=self.tol,
            batch_size=min(int(self.batch_size), X.shape[0]),
            forgetting=float(self.forgetting),
            solver=self.solver,
            eval_size=X.shape[0],
        )

    def partial_fit(self, X, y=None):
        """One online step on the minibatch `X`: certified codes (as scikit-learn's `partial_fit`
        codes its minibatch to convergence; `fit`'s online learner caps the code steps instead,
        see `learn_dictionary(code_steps=...)`), statistics update, atom sweeps."""
        import jax.numpy as jnp

        from ._learning._online import Online

        first = not hasattr(self, "_state")
        X = _validate(self, X, reset=first)
        alpha = _check_alpha(self.alpha)
        learner = Online(solver=self.solver, forgetting=float(self.forgetting), code_steps=None)
        if first:
            k = X.shape[1] if self.n_components is None else int(self.n_components)
            if X.shape[0] < k:
                raise ValueError(
                    f"the first partial_fit batch draws the {k} initial atoms from its samples: "
                    f"it needs at least n_components={k} samples, got {X.shape[0]}"
                )
            rng = check_random_state(self.random_state)
            D0 = X[rng.choice(X.shape[0], k, replace=False)]
            norms = np.linalg.norm(D0, axis=1, keepdims=True)
            D0 = np.where(norms > 0, D0 / np.where(norms > 0, norms, 1), 1 / np.sqrt(X.shape[1]))
            self._state = learner.init(jnp.asarray(X), jnp.asarray(D0))
            self.n_components_ = k
            self.n_iter_ = 0
        batch = jnp.asarray(X, self._state.D.dtype)
        tol = jnp.asarray(1e-10 if batch.dtype == jnp.float64 else 1e-6, batch.dtype)
        lam = jnp.asarray(alpha, batch.dtype)
        self._state, _ = learner.step(batch, lam, tol, self._state)
        self.components_ = np.asarray(self._state.D, dtype=X.dtype)
        self.n_iter_ += 1
        self.n_steps_ = self.n_iter_
        return self

    def fit(self, X, y=None):
        """Learn the dictionary from `X` (resets any `partial_fit` state)."""
        if hasattr(self, "_state"):
            del self._state
        return super().fit(X, y)
