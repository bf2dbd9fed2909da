"""Llama 3's rope scaling recovered from rope_freqs factors (lm_lab.hf.rope_freqs), on factors
written the way llama.cpp's converter writes them (fp32, one per rotary frequency)."""

import math

import numpy as np
import pytest

from lm_lab.hf.rope_freqs import llama3_scaling


def llama3_rope_freqs(
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
    head_dim: int = 16,
    base: float = 5000.0,
) -> np.ndarray:
    """rope_freqs.weight as llama.cpp's convert_hf_to_gguf computes it for a llama3
    rope_scaling (fp32 throughout): per frequency, what the runtime divides it by."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    wavelen = np.float32(2 * math.pi) / inv_freq
    context, low, high = original_max_position_embeddings, low_freq_factor, high_freq_factor
    smooth = (context / wavelen - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    slowed = np.where(wavelen > context / low, factor, blended)
    return np.where(wavelen < context / high, 1, slowed).astype(np.float32)  # (Dh/2,)


LLAMA31 = {  # Llama 3.1 8B's head and rope: six of its 64 frequencies are blended
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


LLAMA32 = LLAMA31 | {"factor": 32.0}  # Llama 3.2 1B / 3B: head 64, three blended


@pytest.mark.parametrize(("params", "head_dim", "blended"), [(LLAMA31, 128, 6), (LLAMA32, 64, 3)])
def test_llama_3_factors_give_its_rope_scaling_back(params, head_dim, blended):
    factors = llama3_rope_freqs(**params, head_dim=head_dim, base=500000.0)
    assert ((factors > 1) & (factors < params["factor"])).sum() == blended
    assert llama3_scaling(factors, head_dim, 500000.0) == {"rope_type": "llama3", **params}


def test_only_ratios_are_identifiable_unless_the_file_gives_the_original_context():
    """low 2, high 8, context 64 draw the factors that low 1, high 4, context 32 draw (the
    line's slope 64 / 6 and intercept -2 / 6); the file's original_context_length picks the
    first. Head 64, base 1e4: five wavelengths (8.4 to 26.5) fall in the band [8, 32]."""
    params = {"factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0}
    factors = llama3_rope_freqs(**params, original_max_position_embeddings=64, head_dim=64,
                                base=10000.0)  # fmt: skip
    assert ((factors > 1) & (factors < 4)).sum() == 5
    equivalent = {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    assert llama3_scaling(factors, 64, 10000.0) == {
        "rope_type": "llama3", **equivalent, "original_max_position_embeddings": 32
    }  # fmt: skip
    assert llama3_scaling(factors, 64, 10000.0, context=64) == {
        "rope_type": "llama3", **params, "original_max_position_embeddings": 64
    }  # fmt: skip


def test_the_files_factor_is_preferred_and_checked():
    factors = llama3_rope_freqs(**LLAMA31, head_dim=128, base=500000.0)
    assert llama3_scaling(factors, 128, 500000.0, factor=8.0)["factor"] == 8.0
    with pytest.raises(ValueError, match="no llama3 parameters give"):
        llama3_scaling(factors, 128, 500000.0, factor=6.0)  # the largest factor says 8


def test_factors_all_one_mean_no_scaling():
    assert llama3_scaling(np.ones(8, np.float32), 16, 5000.0) is None


def test_a_factor_off_by_1e_5_is_refused():
    """The recompute is what guards: one blended factor nudged past RTOL fails it."""
    factors = llama3_rope_freqs(**LLAMA31, head_dim=128, base=500000.0)
    factors[31] *= 1 + 1e-5
    with pytest.raises(ValueError, match="not Llama 3's rope scaling"):
        llama3_scaling(factors, 128, 500000.0)
