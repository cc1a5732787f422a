"""Hand-written tiny configs for the support table's automatic analysis.

``tokenprune.support`` builds every image-text architecture without a bundled spec from its default config
(``AutoConfig.for_model(model_type)``) and analyses the model it gets. Some families' default configs do
not build without a checkpoint (a required field left ``None``: a QSA indexer budget, an expert count, a
RoPE section); for those, the keyword arguments below are passed to ``AutoConfig.for_model`` instead, so
the analysis sees the real module tree. Each entry is the smallest config that builds and keeps the
family's layer layout (layer types, MoE, indexer) as its checkpoints have it; keep them tiny.

Architectures with a bundled spec never need an entry: their spec's test data (``NAME.test.yaml``) builds them.
"""

from __future__ import annotations

from typing import Any

# architecture class name -> keyword arguments of AutoConfig.for_model(model_type, **kwargs)
ANALYSIS_CONFIGS: dict[str, dict[str, Any]] = {
    # Qwen4-Exp: the default text config enables indexed (QSA) attention on every 4th layer but leaves the
    # indexer's budget and compression ratio None (Qwen4ExpTextQSAIndexer divides them).
    "Qwen4ExpForConditionalGeneration": {
        "text_config": {
            "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
            "linear_num_key_heads": 2, "linear_num_value_heads": 4, "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2, "hc_lowrank": 8,
            "indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
            "indexer_compress_ratio": 4,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                "mrope_interleaved": True},
        },
        "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "out_hidden_size": 64},
    },
    # DiffusionGemma: every text layer is a MoE layer, but the default config leaves num_experts None.
    "DiffusionGemmaForBlockDiffusion": {
        "text_config": {
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "global_head_dim": 16,
            "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32,
        },
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16},
    },
    # Granite 4 Vision: the deepstack projectors need downsample_rate and deepstack_layer_map. (Its text model
    # adds projected vision features at the image positions before the layers deepstack_layer_map and
    # spatial_target_layers name: the bundled spec's hint granite4_vision_layer_features makes them placeholders.)
    "Granite4VisionForConditionalGeneration": {
        "text_config": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 4,
                        "num_attention_heads": 4, "num_key_value_heads": 2},
        "vision_config": {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        "downsample_rate": "1/2", "deepstack_layer_map": [[-1, 0], [-2, 1]], "spatial_target_layers": [1, 1, 2, 2],
    },
    # Chameleon and Emu3 read config.image_token_id from vocabulary_map (the tokenizer's vocabulary: '<image>',
    # the VQ image tokens), which the default config leaves None. (Both have bundled specs; these entries let the
    # analysis build them too.)
    "ChameleonForConditionalGeneration": {
        "vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocabulary_map": {"<image>": 250, "IMGIMGAZ": 200, "IMGIMGBZ": 201},
        "vq_config": {"embed_dim": 8, "num_embeddings": 2, "latent_channels": 8, "base_channels": 32,
                      "channel_multiplier": [1, 1], "num_res_blocks": 1},
    },
    "Emu3ForConditionalGeneration": {
        "vocabulary_map": {"<image>": 250, "<|extra_200|>": 251, "<|visual token 000000|>": 200,
                           "<|visual token 000001|>": 201},
        "text_config": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 1,
                        "eos_token_id": 2},
        "vq_config": {"codebook_size": 2, "embed_dim": 8, "latent_channels": 8, "base_channels": 32,
                      "channel_multiplier": [1, 1], "num_res_blocks": 1, "attn_resolutions": [],
                      "temporal_downsample_factor": 2},
    },
    # Cohere Compass: the rotary module reads rope_parameters per layer type (rope_parameters['full_attention']),
    # the default config has none. Sliding-window layers with RoPE and NoPE full-attention layers (rope_parameters
    # None for that type), Cohere 2's pattern. (Bundled spec: cohere_compass.)
    "CohereCompassForConditionalGeneration": {
        "text_config": {
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "eos_token_id": 2, "sliding_window": 96,
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
            "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0,
                                                      "mrope_section": [2, 3, 3]},
                                "full_attention": None},
        },
        "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "out_hidden_size": 64, "deepstack_visual_indexes": [0]},
    },
    # DeepSeek-OCR-2: every text layer indexes mlp_layer_types (dense or sparse MoE), which the default config
    # leaves None, as it does num_experts_per_tok. (Bundled spec: deepseek_ocr2.)
    "DeepseekOcr2ForConditionalGeneration": {
        "text_config": {
            "vocab_size": 256, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "moe_intermediate_size": 32, "n_routed_experts": 4,
            "num_experts_per_tok": 2, "n_shared_experts": 1, "mlp_layer_types": ["dense", "sparse"],
        },
        "vision_config": {
            "sam_config": {"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "image_size": 64, "patch_size": 8, "window_size": 4, "global_attn_indexes": [0],
                           "mlp_dim": 48, "downsample_channels": [32, 64]},
            "encoder_config": {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 16},
        },
    },
}


def analysis_config(arch: str, model_type: str):
    """The config the support analysis builds ``arch`` from: its hand-written tiny one, else the default."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **ANALYSIS_CONFIGS.get(arch, {}))
