"""Tolerances, defined once for the whole suite."""

# Exact solvers in float64 reach machine precision; the codes agree with an independent float64
# reference up to the conditioning of the support system.
CODES_F64 = 1e-6
# Relative duality gap the float64 solvers are asked to reach in tests.
GAP_F64 = 1e-12
# float32: relative gap 1e-6 is ~10 ulps of the objective; codes then agree to ~1e-3.
GAP_F32 = 1e-6
CODES_F32 = 2e-3
# Objective values of two optimal solutions (non-unique codes: duplicated atoms, k > d).
OBJECTIVE_F64 = 1e-9
