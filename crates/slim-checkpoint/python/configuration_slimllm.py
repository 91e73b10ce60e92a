# Written by slimllm-rs (crates/slim-checkpoint/python/) beside the weights of every pruned model:
# the configuration of a SlimLLM-pruned LLaMA-family model for transformers (trust_remote_code=True).
"""Configuration of a SlimLLM-pruned LLaMA or Qwen2 model.

The HF fields keep the dense model's values; the shapes of each decoder layer (its query heads,
KV heads, query-head-to-KV-head map, FFN width and output biases) are in `slimllm["layers"]`,
which is authoritative. `slimllm["base_model_type"]` is the dense architecture: "llama" or "qwen2"
(q/k/v biases).
"""

from transformers import PretrainedConfig

SLIMLLM_FORMAT_VERSIONS = (1, 2)
BASE_MODEL_TYPES = ("llama", "qwen2")


class SlimLlmConfig(PretrainedConfig):
    model_type = "slimllm"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=None,
        head_dim=None,
        hidden_act="silu",
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        rope_theta=None,
        attention_bias=False,
        use_cache=True,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        slimllm=None,
        **kwargs,
    ):
        rope_parameters = kwargs.pop("rope_parameters", None)
        rope_scaling = kwargs.pop("rope_scaling", None)
        for extra in (rope_scaling, rope_parameters):
            if extra and extra.get("rope_type", extra.get("type", "default")) != "default":
                raise ValueError(f"SlimLlmConfig: RoPE scaling is not supported: {extra}")
        if rope_theta is None:
            rope_theta = (rope_parameters or {}).get("rope_theta", 10000.0)
        if kwargs.get("use_sliding_window"):
            raise ValueError("SlimLlmConfig: sliding-window attention is not supported")
        # Every layer attends to the whole context: no sliding-window cache layers.
        kwargs.pop("sliding_window", None)
        kwargs.pop("max_window_layers", None)
        kwargs["layer_types"] = ["full_attention"] * num_hidden_layers

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = hidden_size // num_attention_heads if head_dim is None else head_dim
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.attention_bias = attention_bias
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        if hidden_act != "silu":
            raise ValueError(f"SlimLlmConfig: hidden_act {hidden_act!r} is not supported (silu)")

        if slimllm is None:
            group = self.num_attention_heads // self.num_key_value_heads
            dense = {
                "num_heads": self.num_attention_heads,
                "num_kv_heads": self.num_key_value_heads,
                "kv_head_of": [h // group for h in range(self.num_attention_heads)],
                "intermediate_size": intermediate_size,
                "o_proj_bias": False,
                "down_proj_bias": False,
            }
            slimllm = {"format_version": 2, "base_model_type": "llama", "layers": [dense] * num_hidden_layers}
        self.slimllm = slimllm
        self._check_layers()
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def base_model_type(self):
        return self.slimllm.get("base_model_type", "llama")

    @property
    def qkv_bias(self):
        """q/k/v projections have biases: always for qwen2, with attention_bias for llama."""
        return self.base_model_type == "qwen2" or bool(self.attention_bias)

    @property
    def layer_shapes(self):
        return self.slimllm["layers"]

    def _check_layers(self):
        version = self.slimllm.get("format_version")
        if version not in SLIMLLM_FORMAT_VERSIONS:
            raise ValueError(f"slimllm.format_version is {version}; this code reads {SLIMLLM_FORMAT_VERSIONS}")
        if self.base_model_type not in BASE_MODEL_TYPES:
            raise ValueError(f"slimllm.base_model_type {self.base_model_type!r} is not one of {BASE_MODEL_TYPES}")
        layers = self.layer_shapes
        if len(layers) != self.num_hidden_layers:
            raise ValueError(f"slimllm.layers has {len(layers)} entries, num_hidden_layers is {self.num_hidden_layers}")
        for i, s in enumerate(layers):
            kv = s["kv_head_of"]
            if len(kv) != s["num_heads"] or any(k < 0 or k >= s["num_kv_heads"] for k in kv):
                raise ValueError(f"layer {i}: kv_head_of {kv} does not map {s['num_heads']} heads "
                                 f"to {s['num_kv_heads']} KV heads")


__all__ = ["SlimLlmConfig"]
