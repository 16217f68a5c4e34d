"""KV cache accounting on transformers' DynamicCache (5.x: `cache.layers[i].keys/.values`,
each [batch, kv_heads, seq, head_dim])."""

from __future__ import annotations

import torch


def cache_layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"{type(cache).__name__} has no .layers (needs transformers >= 5 DynamicCache)")
    return list(layers)


def cache_bytes(cache) -> int:
    """Measured bytes of the key and value tensors held by the cache."""
    total = 0
    for layer in cache_layers(cache):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def cache_tokens(cache) -> list[int]:
    """Tokens held per layer (seq dim of the keys)."""
    return [int(layer.keys.shape[-2]) if getattr(layer, "keys", None) is not None else 0
            for layer in cache_layers(cache)]


def kv_geometry(config) -> dict:
    """layers, kv_heads, head_dim of a decoder config (GQA aware)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return {"layers": int(text.num_hidden_layers), "kv_heads": int(kv_heads), "head_dim": int(head_dim)}


def analytic_kv_bytes(config, tokens: int, dtype: torch.dtype, batch: int = 1) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x tokens x bytes/element x batch."""
    g = kv_geometry(config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * g["layers"] * g["kv_heads"] * g["head_dim"] * int(tokens) * itemsize * int(batch)


def gather_layer(layer, keep: torch.Tensor) -> None:
    """Keep the cached positions `keep` [batch, kv_heads, n_keep] (per head) of one DynamicLayer."""
    idx = keep.unsqueeze(-1).expand(-1, -1, -1, layer.keys.shape[-1])   # [b, kvh, n_keep, head_dim]
    layer.keys = torch.gather(layer.keys, 2, idx).contiguous()
    layer.values = torch.gather(layer.values, 2, idx).contiguous()
