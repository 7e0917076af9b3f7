"""The tolerance ladder every solver walks: 1e-1, 1e-2, ..., one decade per run."""


class DecadeTolerances:
    def get_next(self, stop_val):
        return 0.1 if stop_val > 1 else stop_val / 10
