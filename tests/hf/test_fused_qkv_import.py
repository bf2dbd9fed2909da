"""The fused q/k/v matmul on imported weights: equal to the separate projections after an
import, and after an export read back, for the families with and without q/k/v biases."""

import pytest
import torch

from lm_lab.export import main as export_main
from lm_lab.hf.load import load_language_model

pytest.importorskip("transformers")  # the dev extra (the export writes its config)

IDS = torch.tensor([[5, 17, 33, 9, 60, 61, 7, 12, 40, 3, 77, 21]])


def fused_and_separate(folder) -> tuple[torch.Tensor, torch.Tensor]:
    lm, _ = load_language_model(folder)
    lm.eval()
    with torch.no_grad():
        fused = lm(IDS)
    attn = lm.backbone.encoder.layers[0].attn
    assert attn._fused is not None and attn.q.weight.requires_grad  # both paths really run
    separate = lm(IDS)  # grad on and the weights require it: q, k, v run as modules
    return fused, separate


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # qwen2 has q/k/v biases
def test_fused_qkv_equals_separate_after_import_and_after_export(hf_dirs, family, tmp_path):
    fused, separate = fused_and_separate(hf_dirs[family])
    torch.testing.assert_close(fused, separate, atol=1e-5, rtol=0)
    assert export_main([str(hf_dirs[family]), str(tmp_path / "out")]) == 0
    fused_back, separate_back = fused_and_separate(tmp_path / "out")
    torch.testing.assert_close(fused_back, separate_back, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_back, fused, atol=1e-5, rtol=0)
