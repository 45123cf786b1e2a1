"""Text classifiers, written here: a small transformer encoder and an LSTM, both over token ids.

Both take ``(B, L)`` int64 token ids, or a float ``(B, L, V')`` tensor of (soft) one-hot rows, in which case
the token embedding is ``x @ tok.weight`` (``tok.weight`` may then be a ``(V', d)`` slice of the vocabulary):
a gradient-inversion attack feeds relaxed tokens this way and gets exactly the embedding gradient a client
with those tokens would send. PAD is an ordinary token (no attention mask): every record is read at its full
padded length, as a client padding to a fixed length does.

- :class:`TextTransformer`: token + learned position embeddings, ``layers`` pre-LayerNorm blocks of
  multi-head self-attention and a GELU MLP (4x wider), mean pooling over positions, a linear class head.
- :class:`TextLSTM`: token embedding, one LSTM layer (its cell written out, so double backpropagation works
  on every device), a linear head on the last hidden state.

    >>> import torch
    >>> m = TextTransformer(vocab=50, length=8, num_classes=3, width=16, layers=1, heads=2)
    >>> ids = torch.randint(0, 50, (2, 8))
    >>> onehot = torch.nn.functional.one_hot(ids, 50).float()
    >>> torch.allclose(m(ids), m(onehot), atol=1e-5)
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def embed_tokens(table: nn.Embedding, x: Tensor) -> Tensor:
    """Ids -> embedding rows; float (soft) one-hot rows -> their mixture of ``table.weight`` rows."""
    if x.is_floating_point():
        return x @ table.weight
    return table(x)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TextTransformer(nn.Module):
    def __init__(
        self, vocab: int, length: int, num_classes: int, width: int = 64, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(length, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = embed_tokens(self.tok, x) + self.pos.weight[: x.shape[1]]
        return self.head(self.ln(self.blocks(h)).mean(1))


class TextLSTM(nn.Module):
    def __init__(self, vocab: int, num_classes: int, hidden: int = 64, emb: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, emb)
        self.ih = nn.Linear(emb, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.head = nn.Linear(hidden, num_classes)
        self.hidden = hidden

    def forward(self, x: Tensor) -> Tensor:
        e = self.ih(embed_tokens(self.tok, x))  # (B, L, 4H): the input part of every gate, all steps at once
        h = e.new_zeros(e.shape[0], self.hidden)
        c = torch.zeros_like(h)
        for t in range(e.shape[1]):
            i, f, g, o = (e[:, t] + self.hh(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


def token_embedding(model: nn.Module) -> str:
    """The parameter name of a text model's token embedding (where the token set leaks)."""
    return "tok.weight"


def position_embedding(model: nn.Module) -> str | None:
    return "pos.weight" if isinstance(getattr(model, "pos", None), nn.Embedding) else None


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``B @ A`` (Hu et al. 2021): ``A`` (r, in) small
    random, ``B`` (out, r) zero, so the adapted layer starts equal to the base layer; output scale alpha/r."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = (alpha if alpha is not None else rank) / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * (x @ self.lora_a.T) @ self.lora_b.T


IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: a target position that does not count


class CausalSelfAttention(SelfAttention):
    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return self.out((torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, n, d))


class DecoderBlock(Block):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__(width, heads)
        self.attn = CausalSelfAttention(width, heads)


class GPT(nn.Module):
    """A GPT-style decoder LM: token + learned position embeddings, ``layers`` pre-LayerNorm blocks of causal
    self-attention and a GELU MLP, a final LayerNorm and a vocabulary head (tied to the token embedding or not).

    ``forward`` returns next-token logits shaped ``(B, V, L)`` (vocabulary second, as ``F.cross_entropy``
    takes them) and :meth:`training_targets` the targets a client trains against: the record shifted by one,
    the last token predicting PAD (the end of the record), and the padded positions after it set to
    ``IGNORE_INDEX`` so that ``F.cross_entropy`` leaves them out: the loss is the mean over the records' real
    positions, padding masked. ``lora=R`` wraps every attention Q/K/V projection in a rank-R adapter and
    freezes everything else: the client then trains and sends only the adapters.

        >>> m = GPT(vocab=30, length=6, width=16, layers=2, heads=2)
        >>> ids = torch.randint(2, 30, (3, 6))
        >>> m(ids).shape, m.training_targets(ids)[:, -1].tolist()
        (torch.Size([3, 30, 6]), [0, 0, 0])
        >>> m.training_targets(torch.tensor([[5, 6, 7, 0, 0, 0]])).tolist()   # PAD inputs predict nothing
        [[6, 7, 0, -100, -100, -100]]
        >>> a, b = ids.clone(), ids.clone(); b[:, 4:] = 5                 # causal: a later token changes nothing
        >>> torch.allclose(m(a)[..., :4], m(b)[..., :4], atol=1e-6)
        True
    """

    def __init__(
        self,
        vocab: int,
        length: int,
        width: int = 768,
        layers: int = 2,
        heads: int = 12,
        tied: bool = False,
        lora: int = 0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(length, width)
        self.blocks = nn.Sequential(*[DecoderBlock(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=True)
        if tied:
            self.head.weight = self.tok.weight
        self.pad_id = pad_id
        if lora:
            for p in self.parameters():
                p.requires_grad_(False)
            for blk in self.blocks:
                blk.attn.qkv = LoRALinear(blk.attn.qkv, lora)

    def hidden(self, x: Tensor, upto: int | None = None) -> Tensor:
        """The residual stream after the first ``upto`` blocks (all when None)."""
        h = embed_tokens(self.tok, x) + self.pos.weight[: x.shape[1]]
        for blk in list(self.blocks)[:upto]:
            h = blk(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.ln(self.hidden(x))).transpose(1, 2)

    def training_targets(self, x: Tensor) -> Tensor:
        """Next-token targets of ``x``: shifted by one, PAD after the last token, ``IGNORE_INDEX`` where the input
        itself is PAD (nothing to predict there)."""
        t = torch.cat([x[:, 1:], torch.full_like(x[:, :1], self.pad_id)], dim=1)
        return t.masked_fill(x == self.pad_id, IGNORE_INDEX)


GPT_OPTIONS = ("layers", "dim", "heads", "tied", "lora", "vocab")


def gpt_from_spec(vocab: int, length: int, args: list[str], kwargs: dict[str, str]) -> GPT:
    """``gpt[:layers=2,dim=768,heads=12,tied=0,lora=R]`` (bare ``gpt``: two GPT-2-small-shaped blocks)."""
    from fedleak.errors import FedleakInputError

    if args or set(kwargs) - set(GPT_OPTIONS):
        bad = ", ".join([*args, *sorted(set(kwargs) - set(GPT_OPTIONS))])
        raise FedleakInputError(f"gpt: unknown option(s) {bad}; write gpt:layers=2,dim=768,heads=12,tied=0,lora=8")
    try:
        layers, dim = int(kwargs.get("layers", 2)), int(kwargs.get("dim", 768))
        heads, lora = int(kwargs.get("heads", 12 if dim % 12 == 0 else 4)), int(kwargs.get("lora", 0))
        tied = kwargs.get("tied", "0") in ("1", "true", "yes")
    except ValueError:
        raise FedleakInputError(
            "gpt: layers, dim, heads and lora take whole numbers, e.g. gpt:layers=2,dim=256"
        ) from None
    if layers < 1 or dim < 1 or heads < 1 or lora < 0 or dim % heads:
        raise FedleakInputError(f"gpt: layers={layers}, dim={dim}, heads={heads}: need >= 1 each and dim % heads == 0")
    return GPT(vocab, length, dim, layers, heads, tied, lora)
