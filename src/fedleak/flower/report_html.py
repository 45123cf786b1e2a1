"""report.html of an audited Flower run: one standalone page (pictures inlined as PNG data), rendered from the
run's ``results.json`` dict (kind ``flower-audit``). Torch-free: numpy and Pillow only."""

from __future__ import annotations

import base64
import html
import io
from string import Template
from typing import Any

import numpy as np

PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedleak: audited Flower run</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}.bad{color:#a00;font-weight:bold}.ok{color:#070}.note{color:#555}
img{image-rendering:pixelated;border:1px solid #ddd;max-width:100%}
</style></head><body>
<h1>What the server of this Flower run could rebuild</h1>
<p>$verdict</p>
<h2>Rounds</h2>
<table><tr><th>round</th><th>server saw</th><th>clients (partition &larr; node)</th><th>test accuracy</th>
<th>round wall time (s)</th><th>audit on the round's path (s)</th></tr>
$rounds</table>
<h2>Reconstructions</h2>
<p class="note">Per round, client and attack: what the attack rebuilt from the update that client sent, scored
against that client's own records where the app handed them over (PSNR in dB; "rebuilt" means PSNR at least
10 dB above the better trivial image and SSIM at least 0.5). Top row: the client's records (grey when not
handed over); bottom row: the reconstruction.</p>
$entries
$notes
<p class="note">fedleak $version, seed $seed.</p>
</body></html>
""")


def image_grid_png(top: np.ndarray | None, bottom: np.ndarray, scale: int = 4, columns: int = 16) -> bytes:
    """Pairs of images (N, C, H, W) in [0, 1]: originals over reconstructions, ``columns`` pairs per row."""
    from PIL import Image

    n, c, h, w = bottom.shape
    top = np.full_like(bottom, 0.5) if top is None else top
    cols = min(columns, n)
    rows = -(-n // cols)
    pad = 2
    grid = np.ones(((2 * h + pad) * rows, (w + pad) * cols, c), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = r * (2 * h + pad), k * (w + pad)
        grid[y : y + h, x : x + w] = top[i].transpose(1, 2, 0)
        grid[y + h : y + 2 * h, x : x + w] = bottom[i].transpose(1, 2, 0)
    pixels = (np.clip(np.nan_to_num(grid, nan=0.5), 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _round_row(r: dict[str, Any]) -> str:
    who = ", ".join(
        f"{html.escape(str(c['partition']))} &larr; {html.escape(str(c['node_id']))}" for c in r.get("clients", [])
    )
    return (
        f"<tr><td>{r['round']}</td><td>{html.escape(r.get('seen', ''))}</td><td>{who}</td>"
        f"<td>{_fmt(r.get('test_accuracy'), 3)}</td><td>{_fmt(r.get('round_seconds'), 2)}</td>"
        f"<td>{_fmt(r.get('audit_seconds_on_path'), 3)}</td></tr>"
    )


def _entry(e: dict[str, Any], images: dict[str, bytes]) -> str:
    s = e.get("summary") or {}
    head = (
        f"<h3>round {e['round']}, client {_fmt(e.get('client'))} (node {_fmt(e.get('node_id'))}): "
        f"{html.escape(e['attack'])} on the {html.escape(e.get('received', 'update'))} it sent</h3>"
    )
    if e.get("targets"):
        line = (
            f"<p>{s.get('rebuilt', 0)} of {s.get('targets', 0)} records rebuilt; PSNR median "
            f"{_fmt(s.get('psnr_median'))} dB (trivial baseline median {_fmt(s.get('baseline_psnr_median'))} dB), "
            f"SSIM median {_fmt(s.get('ssim_median'), 3)}; {_fmt(s.get('seconds'), 1)} s.</p>"
        )
    else:
        line = f"<p class='note'>{html.escape(e.get('note') or 'not scored')}</p>"
    png = images.get(e.get("image", ""))
    pic = f"<img alt='reconstruction' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else ""
    return head + line + pic


def render(results: dict[str, Any], images: dict[str, bytes]) -> str:
    """The page for ``results`` (the flower-audit dict); ``images``: file name -> PNG bytes of each entry."""
    inv = results.get("inversion", [])
    scored = [e for e in inv if e.get("targets")]
    rebuilt = sum(e["summary"]["rebuilt"] for e in scored)
    total = sum(e["summary"]["targets"] for e in scored)
    if scored:
        cls = "bad" if rebuilt else "ok"
        verdict = (
            f"<span class='{cls}'>{rebuilt} of {total} client records rebuilt</span> across {len(scored)} "
            f"attacks on updates the clients sent."
        )
    else:
        verdict = "No reconstruction could be scored (the app did not hand over the clients' records)."
    notes = results.get("notes", [])
    notes_html = "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""
    return PAGE.substitute(
        verdict=verdict,
        rounds="\n".join(_round_row(r) for r in results.get("rounds", [])),
        entries="\n".join(_entry(e, images) for e in inv) or "<p>No attack returned a reconstruction.</p>",
        notes=notes_html,
        version=html.escape(str(results.get("fedleak_version", ""))),
        seed=html.escape(str(results.get("seed", ""))),
    )
