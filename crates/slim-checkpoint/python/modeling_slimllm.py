# Written by slimllm-rs (crates/slim-checkpoint/python/) beside the weights of every pruned model:
# the modeling code of a SlimLLM-pruned LLaMA-family model for transformers (trust_remote_code=True).
"""A LLaMA / Qwen2 decoder whose layers each have their own shapes.

Structured pruning leaves every decoder layer with its own number of query heads, of KV heads and of
FFN channels, and may add biases to o_proj and down_proj (regression recovery). The query heads of a
layer read their KV heads through `kv_head_of` (query head h uses KV head kv_head_of[h]), so GQA
groups may be uneven. Otherwise this is transformers' Llama: RMSNorm, SwiGLU (SiLU), rotary position
embeddings in the "rotate half" convention, q/k/v biases for Qwen2 (or `attention_bias`), tied
embeddings when `tie_word_embeddings`. Module names are Llama's, so the safetensors names, PEFT's
`target_modules` and the KV cache (`DynamicCache`, `generate`) work as for Llama.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # transformers before 4.52
    GradientCheckpointingLayer = nn.Module

from .configuration_slimllm import SlimLlmConfig

# transformers 5.x renames the `past_key_values` argument and output field to `cache` (5.24 has both
# names for the argument, and only `cache` for the output); this code reads both and writes the one
# the installed version's output classes have.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class SlimLlmRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def rotary_cos_sin(position_ids, head_dim, theta, dtype):
    """cos and sin of the rotary embedding, `[batch, len, head_dim]`, computed in float32 as transformers does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=position_ids.device) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq  # [B, T, head_dim / 2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x, cos, sin):
    """x: `[B, H, T, D]`; cos, sin: `[B, T, D]`."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class SlimLlmAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        shape = config.layer_shapes[layer_idx]
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = shape["num_heads"]
        self.num_key_value_heads = shape["num_kv_heads"]
        self.kv_head_of = list(shape["kv_head_of"])
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = getattr(config, "attention_dropout", 0.0) or 0.0
        self.config = config
        d, q, kv = config.hidden_size, self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        bias = config.qkv_bias
        self.q_proj = nn.Linear(d, q, bias=bias)
        self.k_proj = nn.Linear(d, kv, bias=bias)
        self.v_proj = nn.Linear(d, kv, bias=bias)
        self.o_proj = nn.Linear(q, d, bias=bool(shape["o_proj_bias"]))

    def forward(self, x, cos, sin, mask, cache=None):
        """x: `[B, T, d]`; mask: boolean `[B, 1, T, S]` (True: attend) or an additive float mask, or None."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # Uneven GQA: query head h reads KV head kv_head_of[h].
        index = torch.tensor(self.kv_head_of, dtype=torch.long, device=k.device)
        k, v = k.index_select(1, index), v.index_select(1, index)  # [B, H, S, D]
        dropout = self.attention_dropout if self.training else 0.0
        if self.config._attn_implementation == "eager":
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # [B, H, T, S]
            if mask is not None and mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            elif mask is not None:
                scores = scores + mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            probs = F.dropout(probs, p=dropout, training=self.training)
            z = torch.matmul(probs, v)
        else:
            if mask is not None and mask.dtype == torch.bool:
                # An additive mask keeps rows with nothing to attend to (left padding) finite.
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                    ~mask, torch.finfo(q.dtype).min
                )
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scaling)
        z = z.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.o_proj(z)


class SlimLlmMLP(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        shape = config.layer_shapes[layer_idx]
        d, f = config.hidden_size, shape["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=bool(shape["down_proj_bias"]))

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SlimLlmDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = SlimLlmAttention(config, layer_idx)
        self.mlp = SlimLlmMLP(config, layer_idx)
        self.input_layernorm = SlimLlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = SlimLlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class SlimLlmPreTrainedModel(PreTrainedModel):
    config_class = SlimLlmConfig
    config: SlimLlmConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SlimLlmDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, SlimLlmRMSNorm):
            nn.init.ones_(module.weight)


def causal_mask(attention_mask, batch, q_len, past, device):
    """Boolean `[B, 1, T, S]` (True: attend) for T new positions after `past` cached ones, from a 2-D
    padding mask over all S = past + T positions (1: a token, 0: padding); None when nothing is masked
    beyond causality and T == 1. A 4-D mask is returned as given."""
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask
    kv_len = past + q_len
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    allowed = (torch.arange(kv_len, device=device)[None, :] <= q_pos)[None, None]  # [1, 1, T, S]
    if attention_mask is not None:
        if attention_mask.shape[-1] < kv_len:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions, the input {kv_len}")
        pad = attention_mask[:, -kv_len:].to(device=device, dtype=torch.bool)
        allowed = allowed & pad[:, None, None, :]
        return allowed
    if q_len == 1:
        return None
    return allowed.expand(batch, 1, q_len, kv_len)


class SlimLlmModel(SlimLlmPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = getattr(config, "pad_token_id", None)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([SlimLlmDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = SlimLlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        past_key_values=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if cache is not None and not isinstance(cache, Cache):
            raise ValueError("the cache must be a transformers Cache (e.g. DynamicCache)")
        b, t, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(t, device=inputs_embeds.device) + past).unsqueeze(0).expand(b, t)
        mask = causal_mask(attention_mask, b, t, past, inputs_embeds.device)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, inputs_embeds.dtype)
        x = inputs_embeds
        hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if hidden is not None:
                hidden.append(x)
            x = layer(x, cos, sin, mask, cache)
        x = self.norm(x)
        if hidden is not None:
            hidden.append(x)
        out = {"last_hidden_state": x, CACHE_FIELD: cache if use_cache else None}
        return BaseModelOutputWithPast(**out, hidden_states=tuple(hidden) if hidden is not None else None)


class SlimLlmForCausalLM(SlimLlmPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = SlimLlmModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:, :] if logits_to_keep > 0 else h
        else:
            h = h[:, logits_to_keep, :]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1, :].float().reshape(-1, self.config.vocab_size)
            loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=out.hidden_states, **{CACHE_FIELD: getattr(out, CACHE_FIELD)}
        )
        if return_dict is False:
            return result.to_tuple()
        return result


__all__ = ["SlimLlmForCausalLM", "SlimLlmModel", "SlimLlmPreTrainedModel"]
