"""``fedleak datasets``: what datasets and formats exist, and which are available here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("datasets")
    def datasets() -> None:
        """List dataset specs and file formats, and check the bundled ones load here."""
        from fedleak.data import DATASETS, load

        rows = []
        for name in DATASETS.names():
            entry = DATASETS.get(name)
            if entry.needs_path:
                status = f"{name}:PATH ({entry.fmt})"
            else:
                try:
                    ds = load(name)
                    status = f"available: {len(ds)} records, shape {tuple(ds.spec.shape)}"
                except Exception as e:  # a missing optional package, say
                    status = f"unavailable ({type(e).__name__})"
            rows.append((name, DATASETS.help(name), status))
        width = max(len(r[0]) for r in rows)
        for name, help_, status in rows:
            print(f"{name:<{width}}  {help_}\n{'':<{width}}  -> {status}")
