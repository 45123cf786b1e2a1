"""``fedleak audit-dp``: audit a DP guarantee with canaries in one training run; writes results.json and
canary_scores.png, prints the accountant's epsilon beside the empirical lower bound and the estimate."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("audit-dp")
    def audit_dp(
        dataset: str = typer.Option("digits", help="dataset spec, e.g. digits, imagefolder:PATH"),
        model: str = typer.Option("mlp", help="model spec: mlp[:H1,H2], lenet, ..."),
        defense: str = typer.Option(
            ..., help="the DP defense to audit: dp-sgd:epsilon=E,delta=D or client-dp:epsilon=E,delta=D"
        ),
        canaries: str = typer.Option(
            ..., help="gradient (dp-sgd, white-box), record (dp-sgd, black-box) or client (client-dp)"
        ),
        num_canaries: int = typer.Option(None, help="canaries m (default: gradient 5000, record 200, client 1000)"),
        clients: int = typer.Option(10, help="real clients, all in every round"),
        rounds: int = typer.Option(30, help="federated rounds"),
        seed: int = typer.Option(0, help="seed for the data split, the model, the noise and the canaries' coins"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
        flower: str = typer.Option(
            None,
            help="run the federation on Flower's simulation engine under Flower's DP wrapper, with the noise and "
            "clip of the client-dp spec: server (DifferentialPrivacyServerSideFixedClipping) or client "
            "(DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod); with --canaries client",
        ),
        out: Path = typer.Option(Path("runs/audit-dp"), help="run folder"),
    ) -> None:
        """Plant canaries (half included, half held out by a seeded coin) in one federated training run and
        bound the epsilon that the implementation really delivers."""
        from fedleak.audit.dpaudit import DPAuditOptions, run_dp_audit
        from fedleak.cli.common import out_dir, say

        out_dir(out)
        opts = DPAuditOptions(
            dataset=dataset,
            model=model,
            defense=defense,
            canaries=canaries,
            num_canaries=num_canaries,
            clients=clients,
            rounds=rounds,
            seed=seed,
            device=device,
            flower=flower,
        )
        run_dp_audit(opts, out=out, echo=say)
