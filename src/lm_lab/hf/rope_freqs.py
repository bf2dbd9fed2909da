"""Llama 3's rope scaling recovered from a GGUF file's `rope_freqs.weight`.

llama.cpp's converter keeps no llama3 parameters in the metadata: it writes, per rotary
frequency, the factor its runtime divides that frequency by: 1 for wavelengths under
context / high_freq_factor, `factor` for those over context / low_freq_factor, and
1 / ((1 - s) / factor + s) in the band between, s = (context / wavelength - low) / (high - low).
In the band, s (read back from each factor) is a line in 1 / wavelength, so two band points fix
its slope context / (high - low) and intercept -low / (high - low): only those ratios are
identifiable, and low_freq_factor is taken as 1 unless the file gives the original context.
The parameters found are kept only if `llama3_frequencies` (what the encoder runs) gives the
file's factors back to RTOL; any other tensor is refused.
"""

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from lm_lab.encoders.positions import inverse_frequencies, llama3_frequencies

RTOL = 1e-6  # relative; llama.cpp's fp32 factors and the encoder's fp32 recompute differ by ~1e-7
CONTEXT = "original_max_position_embeddings"
ACCEPTED = "lm_lab runs unscaled rope and Llama 3's rope_freqs"


def llama3_scaling(
    factors: np.ndarray,
    head_dim: int,
    base: float,
    factor: float | None = None,
    context: int | None = None,
) -> dict[str, Any] | None:
    """The `rope_scaling` (transformers' llama3 keys) whose factors are `factors` (head_dim / 2,);
    None when all are 1 (no scaling). `factor` and `context` are the file's rope.scaling.factor
    and original_context_length, when it has them. ValueError says what the tensor holds."""
    inv_freq = inverse_frequencies(head_dim, base)  # (Dh/2,)
    if factors.shape != tuple(inv_freq.shape):
        raise ValueError(
            f"holds {factors.size} factors, not head_dim / 2 = {len(inv_freq)}; {ACCEPTED}"
        )
    if np.all(factors == 1):
        return None
    fitted = _fit(factors.astype(np.float64), inv_freq.double().numpy(), factor, context)
    for params in _candidates(fitted) if fitted else ():
        if _reproduces(params, factors, inv_freq):
            return {"rope_type": "llama3", **params}
    raise ValueError(
        f"holds factors {factors.min():.4g} to {factors.max():.4g} that no llama3 parameters "
        f"give to {RTOL:g} relative: not Llama 3's rope scaling; {ACCEPTED}"
    )


def _fit(
    factors: np.ndarray, inv_freq: np.ndarray, factor: float | None, context: int | None
) -> dict[str, float] | None:
    """The parameters of the band's line (float64, unrounded); None for a line no llama3
    scaling draws (s must rise with 1 / wavelength and be 0 at a positive one)."""
    factor = float(factor or factors.max())
    band = (factors > 1) & (factors < factor)  # strictly between: the blended frequencies
    if band.sum() < 2:
        raise ValueError(
            f"has {band.sum()} factors between 1 and {factor:.4g} (Llama 3's blended band); "
            f"recovering its rope scaling needs two; {ACCEPTED}"
        )
    smooth = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)  # s of each band point
    slope, intercept = np.polyfit(inv_freq[band] / (2 * math.pi), smooth, 1)
    if slope <= 0 or intercept >= 0:
        return None
    context = context or -slope / intercept  # unsaid: low_freq_factor = 1
    low = -intercept * context / slope
    return {
        "factor": factor,
        "low_freq_factor": float(low),
        "high_freq_factor": float(low + context / slope),
        CONTEXT: context,
    }


def _candidates(fitted: dict[str, float]) -> Iterator[dict[str, float]]:
    """The fitted parameters simplest first: rounded to 0..6 decimals (the context to whole
    positions), then as fitted. The first that gives the factors back is the one kept."""
    for digits in range(7):
        yield {k: round(v, digits) for k, v in fitted.items()} | {CONTEXT: round(fitted[CONTEXT])}
    yield fitted


def _reproduces(params: dict[str, float], factors: np.ndarray, inv_freq: torch.Tensor) -> bool:
    """Whether the encoder's llama3 frequencies for `params` divide inv_freq by `factors`
    (never for a band rounded away: low_freq_factor 0, or high not above it)."""
    if not 0 < params["low_freq_factor"] < params["high_freq_factor"]:
        return False
    ours = inv_freq / llama3_frequencies(inv_freq, "llama3", **params)  # (Dh/2,)
    return bool(np.allclose(ours.numpy(), factors, rtol=RTOL, atol=0))
