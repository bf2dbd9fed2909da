"""Hugging Face model folders in and out: `model_type` gpt2, llama, mistral, qwen2, gpt_neox
mapped onto lm_lab's own TransformerEncoder options (no `transformers` module runs), and
`lm_lab.export` writing lm_lab models back as such folders."""
