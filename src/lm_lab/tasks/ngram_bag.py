"""A learned bag of hashed token n-grams beside the encoder: the "wide" half of wide & deep.

A small labelled set gives an encoder too few examples to learn which exact phrases decide a
label; a linear model over n-gram counts memorises them directly, which is why TF-IDF + logistic
regression is hard to beat there. fastText (Joulin et al., 2017) showed that the same evidence is
learnt as embeddings of hashed n-grams, averaged over the text. Here that average sits beside the
encoder's pooled vector and one head reads both (Cheng et al., 2016, "wide & deep"): the bag
memorises phrases, the encoder generalises over them. The n-grams are of the run's own token ids,
learnt end to end with the rest of the model; no feature is fitted outside it.
"""

import torch
from torch import Tensor, nn

# Odd 61-bit multipliers: each n-gram position gets its own, so (a, b) and (b, a) differ.
_MULTIPLIERS = (0x1F3D5B79A3F1, 0x5851F42D4C95, 0x2545F4914F6C, 0x27BB2EE687B1, 0x14057B7EF767)


class NgramBag(nn.Module):
    """Mean of the embeddings of every token n-gram of the orders `orders` in the real (non-pad)
    part of each row; an n-gram hashes into one of `buckets` rows (collisions are shared, as in
    fastText: more buckets, fewer of them).

    `scale` multiplies the bag: AdamW moves a weight by about lr per step whatever its gradient,
    and a rare n-gram's row takes only the few steps whose batch holds it, so at the encoder's lr
    the bag would barely leave its initialisation (fastText trains its bag at lr 0.1-1). The
    factor gives the bag that larger step without a second optimizer."""

    def __init__(
        self,
        orders: tuple[int, ...] = (1, 2, 3),
        buckets: int = 1 << 18,
        dim: int = 32,
        dropout: float = 0.2,
        scale: float = 20.0,
    ) -> None:
        super().__init__()
        if not orders or min(orders) < 1 or max(orders) > len(_MULTIPLIERS):
            top = len(_MULTIPLIERS)
            raise ValueError(f"task.ngram_bag.orders={list(orders)}: give orders in 1..{top}")
        if buckets < 1 or dim < 1:
            raise ValueError(f"task.ngram_bag: buckets={buckets} and dim={dim} must be >= 1")
        self.orders, self.buckets, self.dim, self.scale = tuple(orders), buckets, dim, scale
        self.embed = nn.Embedding(buckets, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.drop = nn.Dropout(dropout)

    def bucket_ids(self, input_ids: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Bucket of every n-gram (B, N) and whether it lies inside the real tokens (B, N), for
        N = sum over orders of (T - n + 1); batches are right-padded, so an n-gram is real when
        its last token is."""
        B, T = input_ids.shape
        real = torch.ones_like(input_ids, dtype=torch.bool) if pad_mask is None else ~pad_mask
        ids, valid = [], []
        for n in self.orders:
            if n > T:
                continue
            h = torch.full((B, T - n + 1), n, dtype=torch.long, device=input_ids.device)
            for i in range(n):
                h = h * _MULTIPLIERS[i] + input_ids[:, i : T - n + 1 + i]  # wraps mod 2**64
            ids.append(torch.remainder(h, self.buckets))  # (B, T - n + 1)
            valid.append(real[:, n - 1 :])
        return torch.cat(ids, 1), torch.cat(valid, 1)  # (B, N), (B, N)

    def forward(self, input_ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        ids, valid = self.bucket_ids(input_ids, pad_mask)  # (B, N), (B, N)
        w = valid.unsqueeze(-1).to(self.embed.weight.dtype)  # (B, N, 1)
        bag = (self.embed(ids) * w).sum(1) / w.sum(1).clamp(min=1)  # (B, dim)
        return self.drop(bag * self.scale)
