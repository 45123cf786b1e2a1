"""Privacy accounting for the sub-sampled Gaussian mechanism, through Opacus's accountants (RDP, PRV, GDP).

A history is a list of ``(noise_multiplier, sample_rate, steps)`` (Opacus's own format); a :class:`Ledger`
keeps one history per protected unit (a client's dataset for DP-SGD, the population of clients for
client-level DP) and reports the worst epsilon over them.

    >>> round(epsilon([(1.1, 0.01, 100)], 1e-5, "rdp"), 2)       # one epoch at q=0.01 (Opacus's RDP)
    0.96
    >>> z = calibrate_noise(8.0, 1e-5, sample_rate=0.1, steps=100)
    >>> epsilon([(z, 0.1, 100)], 1e-5) <= 8.0
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache

from fedleak.errors import FedleakInputError

ACCOUNTANTS = ("rdp", "prv", "gdp")
History = list[tuple[float, float, int]]


def check_accountant(name: str) -> str:
    if name not in ACCOUNTANTS:
        raise FedleakInputError(f"accountant={name!r}: choose one of {', '.join(ACCOUNTANTS)}")
    return name


def compact(history: History) -> History:
    """Merge consecutive entries with the same noise and sample rate (as Opacus's accountants do)."""
    out: History = []
    for z, q, n in history:
        if out and out[-1][0] == z and out[-1][1] == q:
            out[-1] = (z, q, out[-1][2] + n)
        elif n > 0:
            out.append((float(z), float(q), int(n)))
    return out


@lru_cache(maxsize=512)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    from opacus.accountants import create_accountant

    if not history:
        return 0.0
    if any(z <= 0 for z, _, _ in history):
        return float("inf")
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is still valid
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


def epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after the steps in ``history`` (``inf`` if any step had no noise)."""
    return _epsilon(tuple(compact(history)), float(delta), check_accountant(accountant))


@lru_cache(maxsize=256)
def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier (to Opacus's tolerance) whose epsilon after ``steps`` steps at
    ``sample_rate`` is at most ``target_epsilon`` (Opacus's ``get_noise_multiplier``)."""
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon <= 0 or not 0 < delta < 1:
        raise FedleakInputError(f"epsilon={target_epsilon}, delta={delta}: need epsilon > 0 and 0 < delta < 1")
    try:
        with warnings.catch_warnings():  # "optimal order is the largest alpha" while bisecting: harmless
            warnings.simplefilter("ignore")
            z = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=max(1, int(steps)),
                accountant=check_accountant(accountant),
            )
        return float(z)
    except ValueError as e:
        raise FedleakInputError(
            f"epsilon={target_epsilon} at delta={delta} is out of reach for {steps} steps at sampling rate "
            f"{sample_rate:.4g} ({e}); raise epsilon or train fewer steps"
        ) from None


@dataclass
class Ledger:
    """One accounting history per protected unit; epsilon is the worst over units."""

    histories: dict[object, History] = field(default_factory=dict)

    def add(self, unit: object, noise: float, sample_rate: float, steps: int) -> None:
        self.histories.setdefault(unit, []).append((float(noise), float(sample_rate), int(steps)))
        self.histories[unit] = compact(self.histories[unit])

    def worst(self, delta: float, accountant: str = "rdp") -> tuple[float, History]:
        """(epsilon, history) of the unit that spent the most."""
        best: tuple[float, History] = (0.0, [])
        for h in self.histories.values():
            e = epsilon(h, delta, accountant)
            if e >= best[0]:
                best = (e, h)
        return best

    def __bool__(self) -> bool:
        return bool(self.histories)
