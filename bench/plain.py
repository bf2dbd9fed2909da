"""The hand-written baselines lm_lab is measured against: a bare PyTorch training loop and a bare
KV-cached sampling loop, driving the same modules and batches with no framework in between."""

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from lm_lab.tasks.base import cosine_with_warmup, param_groups
from lm_lab.tasks.language_model import LanguageModel


def plain_train(
    model: LanguageModel,
    batches: Iterable[dict[str, Tensor]],
    steps: int,
    total_steps: int,
    on_step: Callable[[], None] = lambda: None,
) -> None:
    """nanoGPT's loop: AdamW (fused), warmup + cosine per step, grad clip 1.0, over `batches`."""
    opt_cfg, sched_cfg = model.optimizer_cfg, model.scheduler_cfg
    opt = torch.optim.AdamW(
        param_groups(model, opt_cfg["weight_decay"]),
        lr=opt_cfg["lr"],
        betas=tuple(opt_cfg["betas"]),
        fused=True,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: cosine_with_warmup(
            step, sched_cfg["warmup_steps"], total_steps, sched_cfg["min_lr_ratio"]
        ),
    )
    model.train()
    step = 0
    while step < steps:
        for batch in batches:
            logits = model(batch["input_ids"])  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            on_step()
            step += 1
            if step == steps:
                return


@torch.inference_mode()
def plain_eval(model: LanguageModel, batches: Iterable[dict[str, Tensor]]) -> float:
    """Mean next-token loss over every scored target of `batches`."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        logits = model(batch["input_ids"])  # (B, T, V)
        targets = batch["targets"].flatten()
        total += float(F.cross_entropy(logits.flatten(0, 1), targets, reduction="sum"))
        count += int((targets != -100).sum())
    return total / count


@torch.inference_mode()
def plain_generate(
    model: LanguageModel, prompt: Tensor, max_new_tokens: int, temperature: float, seed: int
) -> Tensor:
    """Sample from a transformer with a KV cache written out by hand (nanoGPT-style), reading the
    weights of lm_lab's modules directly. prompt (B, T) -> new ids (B, max_new_tokens)."""
    backbone, encoder = model.backbone, model.backbone.encoder
    generator = torch.Generator().manual_seed(seed)
    caches: list[tuple[Tensor, Tensor] | None] = [None] * len(encoder.layers)
    x, position, new = prompt, 0, []
    for _ in range(max_new_tokens):
        h = backbone.embed(x)  # (B, t, D)
        if encoder.pos is not None:
            h = encoder.pos(h, position)
        for i, block in enumerate(encoder.layers):
            attn, y = block.attn, block.ln1(h)
            B, t, D = y.shape
            q, k, v = (
                p(y).view(B, t, attn.n_heads, -1).transpose(1, 2) for p in (attn.q, attn.k, attn.v)
            )
            if attn.rope is not None:
                q, k = attn.rope(q, k, position)
            if caches[i] is not None:
                k, v = torch.cat([caches[i][0], k], 2), torch.cat([caches[i][1], v], 2)
            caches[i] = (k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)  # (B, H, t, Dh)
            h = h + attn.o(y.transpose(1, 2).reshape(B, t, D))
            h = h + block.mlp(block.ln2(h))
        logits = backbone.norm(h[:, -1]) @ backbone.embed.weight.T  # (B, V)
        if temperature == 0:
            x = logits.argmax(-1, keepdim=True)
        else:
            x = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)
        new.append(x)  # (B, 1)
        position += t
    return torch.cat(new, 1)
