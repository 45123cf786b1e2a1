"""``fedleak invert``: one gradient-inversion experiment (images, or text with ``--modality text``)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("invert")
    def invert(
        dataset: str = typer.Option(..., help="dataset spec, e.g. digits or imagefolder:PATH (see `fedleak datasets`)"),
        model: str = typer.Option(
            "lenet", help="model spec: lenet[:init=torch], convnet[:W], resnet20, mlp[:H], or yours: file.py:factory"
        ),
        weights: Path = typer.Option(None, help="trained weights (.safetensors, e.g. from fedleak train) to attack"),
        attack: str = typer.Option("idlg", help="dlg, idlg, ig, fedavg, analytic, imprint (text: tag, ...)"),
        modality: str = typer.Option("image", help="image or text"),
        indices: str = typer.Option(None, help="dataset indices to attack, e.g. 0,5000,10000"),
        num_images: int = typer.Option(
            None, min=1, max=100_000, help="attack a seeded sample of N records (instead of --indices)"
        ),
        num_records: int = typer.Option(None, min=1, max=100_000, help="the same as --num-images (text)"),
        lora_rank: int = typer.Option(None, min=1, max=4096, help="text: LoRA clients with rank-R adapters (gpt)"),
        batch_size: int = typer.Option(1, min=1, max=100_000, help="records per client update B"),
        local_steps: int = typer.Option(
            None, min=1, max=100_000, help="FedAvg: local SGD steps S (default 5 for --attack fedavg)"
        ),
        local_lr: float = typer.Option(0.1, help="FedAvg: local learning rate"),
        local_epochs: int = typer.Option(
            None, min=1, max=10_000, help="FedAvg: local epochs E over the update's records (instead of --local-steps)"
        ),
        local_batch_size: int = typer.Option(
            None, min=1, max=100_000, help="FedAvg: mini-batch b of the local epochs (default: --batch-size)"
        ),
        iterations: int = typer.Option(
            None, min=1, max=1_000_000, help="optimiser steps (L-BFGS: calls of step, as DLG's code)"
        ),
        restarts: int = typer.Option(
            None,
            min=1,
            max=1000,
            help="random restarts, the best by the attack's objective (dlg/idlg: tried in turn, "
            "the next only where a start stalls far from the update)",
        ),
        trained_rounds: int = typer.Option(0, min=0, max=10_000, help="attack the model after T FedAvg rounds"),
        defense: list[str] = typer.Option(None, help="defense spec, repeatable: prune:0.9, secagg:4, dp-sgd:..."),
        grant: str = typer.Option(None, help="threat model grants, e.g. labels or all (default: all but labels)"),
        seed: int = typer.Option(0, help="seed for the model, the chosen records and the attack"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
        out: Path = typer.Option(Path("runs/invert"), help="run folder"),
        bn_prior: str = typer.Option(
            "auto", help="BatchNorm running statistics as a prior (ig, fedavg): auto (where they inform) or off"
        ),
        image_prior: str = typer.Option(
            "auto",
            help="Gaussian image prior fitted on the dataset's records not attacked (dlg, idlg): auto (where the "
            "update leaves the batch undetermined) or off",
        ),
    ) -> None:
        """Rebuild a client's records from the update it sent; writes results.json and reconstructions.png."""
        from fedleak.cli.common import int_list, out_dir, say
        from fedleak.errors import FedleakInputError

        out_dir(out)
        picked = int_list(indices, "--indices")
        common = dict(
            dataset=dataset,
            model=model,
            attack=attack,
            indices=picked,
            num_images=num_images,
            batch_size=batch_size,
            iterations=iterations,
            local_steps=local_steps,
            local_lr=local_lr,
            seed=seed,
            device=device,
            defenses=list(defense or []),
            out=out,
            echo=say,
        )
        if modality == "text":
            from fedleak.audit.text_inversion import run_text_inversion

            if num_records is not None:
                common["num_images"] = num_records
            run_text_inversion(**common, lora_rank=lora_rank, weights=weights)
        elif modality == "image":
            if lora_rank is not None:
                raise FedleakInputError("--lora-rank is for --modality text")
            if num_records is not None:
                common["num_images"] = num_records
            from fedleak.attacks.inversion import PRESETS
            from fedleak.attacks.inversion.bn_prior import BN_PRIOR_MODES
            from fedleak.audit.invert import run_inversion

            if bn_prior not in BN_PRIOR_MODES:
                raise FedleakInputError(f"--bn-prior {bn_prior!r}: choose {' or '.join(BN_PRIOR_MODES)}")
            if bn_prior == "off" and attack not in PRESETS:
                raise FedleakInputError(f"--bn-prior is for {', '.join(PRESETS)}; {attack} uses no prior")
            run_inversion(
                **common,
                local_epochs=local_epochs,
                local_batch_size=local_batch_size,
                restarts=restarts,
                trained_rounds=trained_rounds,
                grant=grant,
                weights=weights,
                options={"bn_prior": "off"} if bn_prior == "off" else None,
                image_prior=image_prior,
            )
        else:
            raise FedleakInputError(f"--modality {modality!r}: choose image or text")
