"""Client-level DP-FedAvg (McMahan et al. 2018): the server clips each client's update to norm C, averages
with a fixed denominator and adds Gaussian noise of std z*C/m to the mean; RDP accounting over the rounds at
the client sampling rate m/N.

    >>> import torch
    >>> from fedleak.fl import ClientUpdate
    >>> big = {"w": torch.full((4,), 10.0)}
    >>> u = [ClientUpdate("mlp", {}, big, "delta", 1, 1, 0.1, 1, None) for _ in range(2)]
    >>> agg = ClientDPAggregator(noise=0.0, clip=1.0, population=10)
    >>> round(float(agg(u, torch.Generator().manual_seed(0))["w"].norm()), 4)     # each clipped to norm 1
    1.0
    >>> agg.privacy()["sample_rate"], agg.privacy()["rounds"]
    (0.2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fedleak.defenses.accounting import ACCOUNTANTS, Ledger, calibrate_noise, check_accountant
from fedleak.defenses.update import clip_payload, gaussian_noise
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate


@dataclass
class ClientDPAggregator:
    """``client-dp:noise=Z,clip=C`` or ``client-dp:epsilon=E,delta=D``: an ``aggregator`` for
    :class:`fedleak.fl.Federation`.

    With a target epsilon the noise multiplier is the smallest that keeps epsilon at delta within E after
    ``planned_rounds`` rounds (set by ``DefensePlan.bind(rounds=...)``) at the sampling rate of the first round.

    ``population`` (the number of clients N) gives the sampling rate m/N; unknown, the rate is taken as 1
    (no amplification by sampling). Fixed-size sampling is accounted as Poisson sampling at the same rate,
    the usual approximation of DP-FedAvg.
    """

    noise: float | None = None
    clip: float = 1.0
    target_epsilon: float | None = None
    planned_rounds: int | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    population: int | None = None
    ledger: Ledger = field(default_factory=Ledger)
    rounds: int = 0

    def __post_init__(self) -> None:
        check_accountant(self.accountant)
        if (self.noise is None) == (self.target_epsilon is None):
            raise FedleakInputError("client-dp: give noise=Z or epsilon=E (with delta=D), not both and not neither")
        if (self.noise is not None and self.noise < 0) or self.clip <= 0 or not 0 < self.delta < 1:
            raise FedleakInputError(
                "client-dp: need noise >= 0, clip > 0, 0 < delta < 1, e.g. client-dp:noise=1,clip=1"
            )

    def __call__(self, updates: list[ClientUpdate], generator: torch.Generator) -> dict[str, Tensor]:
        m = len(updates)
        clipped = [clip_payload(u.payload, self.clip) for u in updates]
        total = {k: sum(c[k] for c in clipped) for k in clipped[0]}
        q = min(1.0, m / self.population) if self.population else 1.0
        if self.noise is None:
            if not self.planned_rounds:
                raise FedleakInputError(
                    "client-dp:epsilon=E needs the number of rounds: call DefensePlan.bind(rounds=...) first"
                )
            assert self.target_epsilon is not None
            self.noise = calibrate_noise(self.target_epsilon, self.delta, q, self.planned_rounds, self.accountant)
        noisy = gaussian_noise(total, self.noise * self.clip, generator) if self.noise > 0 else total
        self.ledger.add("clients", self.noise, q, 1)
        self.rounds += 1
        return {k: v / m for k, v in noisy.items()}

    def privacy(self) -> dict[str, Any]:
        eps, hist = self.ledger.worst(self.delta, self.accountant)
        return {
            "level": "client",
            "mechanism": "client-dp (DP-FedAvg: clip each update, Gaussian noise on the sum)",
            "epsilon": eps if self.ledger else None,
            "delta": self.delta,
            "accountant": self.accountant,
            "epsilon_by_accountant": {a: self.ledger.worst(self.delta, a)[0] for a in ACCOUNTANTS if a != "gdp"}
            if self.ledger
            else {},
            "noise_multiplier": self.noise,
            "target_epsilon": self.target_epsilon,
            "clip": self.clip,
            "rounds": self.rounds,
            "steps": self.rounds,
            "sample_rate": hist[-1][1] if hist else None,
            "history": hist,
            "notes": [] if self.population else ["client population unknown: sampling rate taken as 1"],
        }
