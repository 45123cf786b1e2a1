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
