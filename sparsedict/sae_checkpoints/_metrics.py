r"""What SAE researchers report, next to the certificate, under SAELens' names.

Encoder codes $f$ (the SAE's own, `LoadedSAE.encode`) against exact codes of the decoder (from the
chunked certificate), on the same signals and the same objective
$F_i(a) = \tfrac12\|x_i - b_{dec} - aD\|^2 + \lambda\sum_k a_k$ with unit atoms ($a = f\rho$):

- `explained_variance` $= 1 - \sum_i\|x_i - \hat x_i\|^2 / \sum_i\|x_i - \bar x\|^2$, `mse` (mean
  over signals and features), `cossim` (mean cosine of $x_i$ and $\hat x_i$), `l0` (mean active
  latents), `dead_latents` (latents the encoder never fires on these signals);
- `unused_atoms`: atoms no exact code uses (the certificate's "dead" atoms: a property of the
  decoder, not of the encoder, hence the different name);
- the amortisation gap per signal $F_i(a^{enc}) - F_i(a^{*}) \ge 0$ (up to the exact codes' gap)
  and per atom (usage and mass of the encoder codes against the exact ones);
- `mean_residual`: $\frac1n\sum_i r_i$ of the encoder reconstruction (a bias the SAE leaves).
"""

import dataclasses

import numpy as np

from .._objective import primal_from_terms


@dataclasses.dataclass
class SAEMetrics:
    """Summaries (floats) and per-signal / per-atom arrays; `summary()` gives a flat dict."""

    explained_variance: float
    explained_variance_exact: float
    mse: float
    mse_exact: float
    cossim: float
    l0: float
    l0_exact: float
    dead_latents: int
    unused_atoms: int
    encoder_objective: float
    exact_objective: float
    amortisation_gap: float
    mean_residual_norm: float
    mean_residual: np.ndarray
    amortisation_gap_per_signal: np.ndarray
    l0_per_signal: np.ndarray
    encoder_usage: np.ndarray
    exact_usage: np.ndarray
    encoder_mass: np.ndarray
    exact_mass: np.ndarray

    def summary(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not isinstance(getattr(self, f.name), np.ndarray)
        }

    def per_atom(self) -> dict:
        return {
            "encoder_usage": self.encoder_usage,
            "exact_usage": self.exact_usage,
            "encoder_mass": self.encoder_mass,
            "exact_mass": self.exact_mass,
        }


def sae_metrics(X, sae, lam, cert, *, chunk_size: int = 1024) -> SAEMetrics:
    """Metrics of `sae` (a `LoadedSAE`) on raw signals `X` (n, d), read by chunks.

    `cert` is the `sparsedict.optimality._chunked.certify_chunked` result for
    `sae.D` on `X - sae.b_dec` at the same `lam` (its exact codes' objective and usage).
    """
    n, d = X.shape
    k = sae.k
    lam = float(lam)
    D = sae.D
    mean_x = np.zeros(d)
    for start in range(0, n, chunk_size):
        mean_x += np.asarray(X[start : start + chunk_size], np.float64).sum(0)
    mean_x /= n
    sst = sse = cos = l1 = 0.0
    res_sum = np.zeros(d)
    usage, mass = np.zeros(k, np.int64), np.zeros(k)
    primal, l0 = [], []
    for start in range(0, n, chunk_size):
        x = np.asarray(X[start : start + chunk_size], np.float64)
        a = sae.unit_codes(x)
        xhat = a @ D + sae.b_dec
        r = x - xhat
        rr = np.sum(r * r, axis=1)
        sse += rr.sum()
        sst += np.sum((x - mean_x) ** 2)
        nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(xhat, axis=1)
        cos += np.sum(np.sum(x * xhat, axis=1) / np.maximum(nx * nh, np.finfo(float).tiny))
        res_sum += r.sum(0)
        usage += np.sum(a > 0, axis=0)
        mass += a.sum(0)
        primal.append(primal_from_terms(rr, a.sum(1), lam))
        l0.append(np.sum(a > 0, axis=1))
        l1 += a.sum()
    primal_all = np.concatenate(primal)
    exact = np.asarray(cert.report.signals.primal, np.float64)
    exact_sse = float(np.sum(np.asarray(cert.report.signals.residual_norm, np.float64) ** 2))
    l0_all = np.concatenate(l0)
    mean_res = res_sum / n
    return SAEMetrics(
        explained_variance=float(1 - sse / sst),
        explained_variance_exact=float(1 - exact_sse / sst),
        mse=float(sse / (n * d)),
        mse_exact=float(exact_sse / (n * d)),
        cossim=float(cos / n),
        l0=float(l0_all.mean()),
        l0_exact=float(np.mean(cert.l0)),
        dead_latents=int(np.sum(usage == 0)),
        unused_atoms=int(np.sum(cert.usage == 0)),
        encoder_objective=float(primal_all.mean()),
        exact_objective=float(exact.mean()),
        amortisation_gap=float(primal_all.mean() - exact.mean()),
        mean_residual_norm=float(np.linalg.norm(mean_res)),
        mean_residual=mean_res,
        amortisation_gap_per_signal=primal_all - exact,
        l0_per_signal=l0_all,
        encoder_usage=usage,
        exact_usage=np.asarray(cert.usage),
        encoder_mass=mass,
        exact_mass=np.asarray(cert.report.atoms.mass, np.float64),
    )
