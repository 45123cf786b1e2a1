"""What the commands share: output folders that are never half-written, progress that is quiet in pipes,
and the parsing of comma lists."""

from __future__ import annotations

from pathlib import Path

from fedleak.errors import FedleakInputError
from fedleak.progress import is_terminal, progress  # noqa: F401  (the commands' progress, re-exported)
from fedleak.runio import check_out_dir


def out_dir(path: Path, resume: bool = False) -> Path:
    """Check that ``path`` can be a run folder (it or its nearest existing parent is a writable folder); it is
    created only when the first result is written."""
    return check_out_dir(path)


def int_list(text: str | None, option: str) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FedleakInputError(f"{option} {text!r}: give comma-separated integers, e.g. 0,5000,10000") from None


def say(text: str) -> None:
    print(text, flush=True)


def check_federation(clients: int, rounds: int, defenses: list[str], where: str = "the federation") -> None:
    """What a federated training needs before anything runs: a client, a round, and secure aggregation over at
    most as many clients as there are (each of ``defenses`` is checked alone and all together)."""
    from fedleak.defenses import plan

    if clients < 1:
        raise FedleakInputError(f"--clients {clients}: need at least one client")
    if rounds < 1:
        raise FedleakInputError(f"--rounds {rounds}: train at least one round")
    for spec in defenses:
        k = plan([spec]).secagg
        if k and k > clients:
            raise FedleakInputError(
                f"--defense {spec}: secure aggregation over {k} clients, but {where} has only {clients}; "
                f"use secagg:{clients} or fewer, or more --clients"
            )
