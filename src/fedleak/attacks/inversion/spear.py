"""SPEAR-style exact batch recovery (after Dimitrov et al., NeurIPS 2024, "SPEAR: exact gradient inversion of
batches in federated learning") for a fully connected first layer followed by ReLU.

For a batch of B records, the first layer's weight gradient is G = D^T X (m x d): X holds the B inputs, and
column i of D^T is dL/dz_i, the gradient at the layer's pre-activations for record i, which is exactly zero
wherever the ReLU was off for that record (about half the units). So G has rank B, G = U S V^T, and
D^T = U Q for an unknown invertible B x B matrix Q. Each column q_i of Q is found from B - 1 units at which
record i's ReLU was off: U restricted to those rows has q_i as its null vector. We draw many random sets of
B - 1 units, keep the null vectors whose U q is sparse (a mixture of records is dense), remove duplicates,
fix the scales with the bias gradient (dL/db = D^T 1), and read X = (D^T)^+ G. Every recovered record is
checked: its own ReLU pattern through the sent weights must match the zeros of its column; a batch whose
columns cannot all be found (rank deficient, not sparse enough, too many records for the draws) is reported
as beyond reach with what was found, never filled in with a guess.

    >>> import fedleak, torch
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("mlp:200,act=relu", data.spec, seed=0)
    >>> rec = spear_leak(fedleak.fl.client_update(model, data.subset([0, 1, 2, 3])))
    >>> rec.extras["status"], bool((fedleak.metrics.psnr(rec.pixels[fedleak.metrics.match(rec.pixels,
    ...     data.pixels([0, 1, 2, 3]))], data.pixels([0, 1, 2, 3])) > 60).all())
    ('exact', True)
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from fedleak.attacks.inversion.analytic import first_linear
from fedleak.attacks.inversion.labels import last_layer, recover_labels
from fedleak.attacks.inversion.record import Reconstruction
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate

ZERO = 1e-5  # |dL/dz| below this fraction of the column's largest entry counts as an exact zero (float32 noise)
MIN_SPARSITY = 0.1  # a record's column has at least this share of zeros (a ReLU off); dense mixtures have none
STRONG = 0.7  # a column at least this sparse relative to the sparsest is a record's; a 2-mixture is about half
RANK_TOL = 1e-4  # singular values below this fraction of the largest are numerical noise (float32 gradients)
# draws of B - 1 units before a batch is declared beyond reach: about 3 CPU-minutes on one core at B = 32 on
# mlp:1000 (2,200 draws a second); a direction needs its B - 1 units all off for one record, about B 2^-(B-1) a
# draw, so B = 16 needs ~1e5 draws and B = 32 ~1e9: beyond any budget of minutes
MAX_DRAWS = 400_000


def followed_by_relu(update: ClientUpdate, weight: str) -> bool | None:
    """Whether the layer ``weight`` feeds a ReLU in the update's architecture (None: cannot tell)."""
    from fedleak.models import build

    try:
        model = build(update.model, update.data_spec)
    except Exception:  # an architecture the server cannot rebuild: it cannot tell
        return None
    modules = [m for m in model.modules() if not list(m.children())]
    names = dict(model.named_modules())
    target = names.get(weight.rsplit(".", 1)[0])
    for i, m in enumerate(modules):
        if m is target:
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            return isinstance(nxt, nn.ReLU)
    return None


def numerical_rank(g: Tensor, tol: float = RANK_TOL) -> int:
    s = torch.linalg.svdvals(g)
    return int((s > s[0] * tol).sum()) if s[0] > 0 else 0


def _null_vectors(u: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` null vectors of random (B - 1)-row subsets of ``u`` (m x B), as rows (count x B)."""
    m, b = u.shape
    rows = torch.rand(count, m, generator=generator).argsort(1)[:, : b - 1]
    sub = u[rows]  # count x (B-1) x B
    return torch.linalg.svd(sub).Vh[:, -1, :]  # the right singular vector of the smallest singular value


def _sparsity(cols: Tensor) -> Tensor:
    """Per column (rows of ``cols``: candidates x m), the share of entries that are zero up to float noise."""
    peak = cols.abs().amax(1, keepdim=True).clamp_min(1e-300)
    return (cols.abs() < ZERO * peak).double().mean(1)


def independent(vectors: Tensor, b: int, tol: float = 1e-6) -> list[Tensor]:
    """Up to ``b`` of ``vectors`` (rows, in order) that are linearly independent: each kept one has a residual of at
    least ``tol`` of its norm outside the span of those kept before it (a duplicate or a mixture adds nothing)."""
    kept: list[Tensor] = []
    for v in vectors:
        if len(kept) == b:
            break
        if kept:
            basis = torch.linalg.qr(torch.stack(kept, 1)).Q
            if (v - basis @ (basis.T @ v)).norm() < tol * v.norm():
                continue
        kept.append(v)
    return kept


def disaggregate(
    g: Tensor, gb: Tensor, b: int, generator: torch.Generator, max_draws: int = MAX_DRAWS, chunk: int = 20_000
) -> tuple[Tensor | None, int, int]:
    """Columns of D^T (m x B, scaled so that they sum to ``gb``) from G = D^T X, or None; also how many distinct
    sparse columns were found and how many subsets were drawn."""
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    u = u[:, :b]
    reps = torch.zeros(0, b, dtype=u.dtype)  # distinct sparse directions (up to sign), the sparsest first
    reps_sp = torch.zeros(0, dtype=u.dtype)
    found: list[Tensor] = []
    drawn = 0
    while drawn < max_draws:
        q = _null_vectors(u, min(chunk, max_draws - drawn), generator)
        drawn += len(q)
        sp = _sparsity(q @ u.T)
        keep = sp >= MIN_SPARSITY
        cand = torch.cat([reps, q[keep] / q[keep].norm(dim=1, keepdim=True)])
        cand_sp = torch.cat([reps_sp, sp[keep]])
        order = torch.argsort(cand_sp, descending=True)
        cand, cand_sp = cand[order], cand_sp[order]
        new_reps, new_sp = [], []
        while len(cand):  # one representative per direction: the sparsest draw of it
            new_reps.append(cand[0])
            new_sp.append(cand_sp[0])
            rest = (cand @ cand[0]).abs() < 0.999
            cand, cand_sp = cand[rest], cand_sp[rest]
        if new_reps:
            reps, reps_sp = torch.stack(new_reps), torch.stack(new_sp)
        # a record's column is about as sparse as the sparsest; a mixture of two has roughly the product
        strong = reps[reps_sp >= STRONG * reps_sp[0]] if len(reps) else reps
        found = independent(strong, b)
        if len(found) >= b:
            break
    if len(found) < b:  # the budget ran out: say how many independent directions were found, never fill in the rest
        return None, len(found), drawn
    qm = torch.stack(found, 1)  # B x B, full rank by construction
    cols = u @ qm  # m x B, each column one record's dL/dz up to scale
    scale = torch.linalg.lstsq(cols, gb[:, None]).solution[:, 0]
    return cols * scale, b, drawn


def labels_from_columns(update: ClientUpdate, x: Tensor, cols: Tensor, bias: str) -> Tensor | None:
    """Each recovered record's label, exactly: the class whose gradient at the first layer's bias, for that record
    through the model the server sent, is parallel to the record's recovered column (None: cannot rebuild the
    model)."""
    from torch.func import functional_call, grad

    from fedleak.models import build

    try:
        model = build(update.model, update.data_spec)
        model.load_state_dict(update.global_state)
    except Exception:
        return None
    model = model.double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    k = update.data_spec.num_classes

    def loss(p: dict, xi: Tensor, c: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), c[None])

    labels = []
    for i in range(len(x)):
        col = cols[:, i] / cols[:, i].norm()
        best, best_c = float("inf"), 0
        for c in range(k):
            gb = grad(loss)(params, x[i].double(), torch.tensor(c))[bias]
            gb = gb / gb.norm().clamp_min(1e-300)
            err = float(torch.minimum((gb - col).norm(), (gb + col).norm()))
            if err < best:
                best, best_c = err, c
        labels.append(best_c)
    return torch.tensor(labels, dtype=torch.long)


def spear_leak(update: ClientUpdate, seed: int = 0, max_draws: int = MAX_DRAWS) -> Reconstruction:
    """Recover every record of a FedSGD batch exactly from a ReLU first layer's gradient (see module docs)."""
    t0 = time.perf_counter()
    spec = update.data_spec
    if spec is None:
        raise FedleakInputError("attack 'spear' needs the data format (data_spec) of the update")
    if max_draws < 1:
        raise FedleakInputError(f"spear's max_draws must be >= 1 (got {max_draws}); it bounds the unit subsets drawn")
    if update.kind != "gradient":
        raise FedleakInputError(
            "attack 'spear' reads one FedSGD gradient; this update is a FedAvg delta (use --attack fedavg)"
        )
    d = math.prod(spec.shape)
    try:
        w, bname = first_linear(update.payload, d)
    except FedleakInputError:
        raise FedleakInputError(
            "attack 'spear' needs a fully connected first layer with a bias followed by ReLU "
            "(e.g. --model mlp:1000,act=relu); this model has none"
        ) from None
    if followed_by_relu(update, w) is False:
        raise FedleakInputError(
            f"attack 'spear' needs a ReLU after the first linear layer ({w}); this model uses another activation "
            "(e.g. --model mlp:1000,act=relu)"
        )
    g = update.payload[w].detach().double().cpu()
    gb = update.payload[bname].detach().double().cpu()
    b = numerical_rank(g)
    status, note = "exact", None
    gen = torch.Generator().manual_seed(seed)
    cols, found, drawn = disaggregate(g, gb, b, gen, max_draws=max_draws) if b > 1 else (gb[:, None], 1, 0)
    if cols is None:
        status = "beyond reach"
        note = (
            f"spear: beyond reach at this budget: {found} of {b} directions found after {drawn} draws (too many "
            "records for the draws, or too few ReLUs off per record); nothing is guessed"
        )
        x = torch.full((b, *spec.shape), float("nan"))
    else:
        x = torch.linalg.lstsq(cols, g).solution  # B x d: X = (D^T)^+ G
        w0 = update.global_state.get(w)
        b0 = update.global_state.get(bname)
        if w0 is not None and b0 is not None:  # each record's own ReLU pattern must match its column's zeros
            z = x @ w0.double().cpu().T + b0.double().cpu()
            off = cols.T.abs() < ZERO * cols.T.abs().amax(1, keepdim=True)
            agree = ((z <= 0) == off).double().mean(1)
            if bool((agree < 0.99).any()):
                status = "inconsistent"
                note = f"recovered records disagree with their ReLU patterns (agreement {agree.min():.3f})"
        x = x.view(b, *spec.shape).float()
    lw, lb = last_layer(update.payload, spec.num_classes)
    labels, method = update.labels, "granted"
    if labels is None and cols is not None:
        labels = labels_from_columns(update, x, cols, bname)
        method = "exact (each record's column)" if labels is not None else method
    if labels is None and lw is not None:
        labels, method = recover_labels(update.payload, lw, lb, b), "analytic counts"
    pixels = spec.denormalize(x).clamp(0, 1) if spec.modality == "image" else x
    if status == "beyond reach":
        pixels = torch.full_like(x, 0.5)  # shown grey; never scored as a reconstruction (status says why)
    return Reconstruction(
        attack="spear",
        inputs=x,
        pixels=pixels,
        labels=None if labels is None else labels.cpu(),
        objective=torch.zeros(1),
        seconds=time.perf_counter() - t0,
        label_method=method,
        extras={"status": status, "note": note, "rank": b, "found": found, "draws": drawn, "layer": w},
    )


__all__ = ["MAX_DRAWS", "disaggregate", "independent", "numerical_rank", "spear_leak"]
