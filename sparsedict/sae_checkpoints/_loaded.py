r"""A sparse autoencoder read from disk, converted to THEORY's objective.

Every supported library decodes $\hat x = f W_{\mathrm{dec}} + b_{\mathrm{dec}}$ with codes
$f \ge 0$. With atom norms $\rho_k = \|W_{\mathrm{dec},k}\|$, unit atoms $d_k = W_{\mathrm{dec},k}
/ \rho_k$ and codes $a_k = f_k \rho_k$ give the same reconstruction, and the library's loss becomes
(up to a positive factor) THEORY's objective on centred signals $x - b_{\mathrm{dec}}$:
$\tfrac12\|x - b_{\mathrm{dec}} - aD\|^2 + \lambda \sum_k a_k$ (see `lam_convention`).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LoadedSAE:
    r"""Weights of a checkpoint, upcast to float64, with the implied $\lambda$.

    Attributes:
        library: `"saelens"`, `"sparsify"`, `"dictionary_learning"` or `"sparsedict"`.
        activation: `"relu"`, `"topk"`, `"batchtopk"`, `"jumprelu"` or `"gated"`.
        W_enc: encoder rows (k, d); pre-activations are $(x - c) W_{enc}^\top + b_{enc}$ (for a
            gated SAE: the gate path, $b_{enc}$ = `b_gate`).
        b_enc: (k,). b_dec: decoder bias (d,); the certificate centres the data by it.
        D: unit-norm atoms (k, d). norms: the stored decoder row norms $\rho_k$ (k,).
        subtract_b_dec: whether the encoder sees $x - b_{dec}$ ($c = b_{dec}$) or $x$ ($c = 0$).
        top_k: the number of latents a TopK coder keeps (None otherwise).
        threshold: JumpReLU thresholds (k,) or a BatchTopK inference threshold (scalar); None.
        W_mag, b_mag: a gated SAE's magnitude path, rows $W_{enc,k} e^{r_{mag,k}}$ (k, d) and
            $b_{mag}$ (k,): $f_k = [\pi^{gate}_k > 0]\,\max(0, (x - c) \cdot W_{mag,k} +
            b_{mag,k})$. None otherwise.
        lam: $\lambda$ implied by the stored coefficient and the library's loss; None when the
            loss has no L1 term (TopK, JumpReLU): pass `lam` or a target L0 instead.
        lam_convention: how `lam` was derived, with the file and config fields used.
        config: the checkpoint's configuration as read.
    """

    library: str
    activation: str
    W_enc: np.ndarray
    b_enc: np.ndarray
    D: np.ndarray
    norms: np.ndarray
    b_dec: np.ndarray
    subtract_b_dec: bool
    lam: float | None
    lam_convention: str
    top_k: int | None = None
    threshold: np.ndarray | None = None
    W_mag: np.ndarray | None = None
    b_mag: np.ndarray | None = None
    config: dict = dataclasses.field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.D.shape[0]

    @property
    def d(self) -> int:
        return self.D.shape[1]

    @property
    def W_dec(self) -> np.ndarray:
        """The stored decoder rows (k, d): `norms[:, None] * D`."""
        return self.norms[:, None] * self.D

    def encode(self, X, xp=np):
        """The library's own codes $f$ (n, k) for raw signals X (n, d), in stored units."""
        X = xp.asarray(X)
        dtype = X.dtype
        W_enc = xp.asarray(self.W_enc, dtype)
        inputs = X - xp.asarray(self.b_dec, dtype) if self.subtract_b_dec else X
        pre = inputs @ W_enc.T + xp.asarray(self.b_enc, dtype)
        f = xp.maximum(pre, 0.0)
        if self.activation == "gated":
            assert self.W_mag is not None and self.b_mag is not None
            magnitude = inputs @ xp.asarray(self.W_mag, dtype).T + xp.asarray(self.b_mag, dtype)
            return xp.where(pre > 0, xp.maximum(magnitude, 0.0), 0.0)
        if self.activation == "jumprelu":
            return xp.where(pre > xp.asarray(self.threshold, dtype), f, 0.0)
        if self.activation == "batchtopk" and self.threshold is not None and self.threshold >= 0:
            return xp.where(f > xp.asarray(self.threshold, dtype), f, 0.0)
        if self.activation in ("topk", "batchtopk"):
            kth = -xp.sort(-f, axis=-1)[..., self.top_k - 1 : self.top_k]
            return xp.where(f >= kth, f, 0.0)
        return f

    def unit_codes(self, X, xp=np):
        """Encoder codes for the unit atoms `D`: $a_k = f_k \\rho_k$ (n, k)."""
        X = xp.asarray(X)
        return self.encode(X, xp) * xp.asarray(self.norms, X.dtype)

    def centre(self, X, xp=np):
        """The signals THEORY's objective sees: $x - b_{\\mathrm{dec}}$."""
        X = xp.asarray(X)
        return X - xp.asarray(self.b_dec, X.dtype)
