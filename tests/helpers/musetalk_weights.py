"""Deterministic stand-in weights for MuseTalk 1.5, in the file layout a user has (from the team's reference
notes, shared/reference/musetalk/make_weights.py).

Only torch is needed to regenerate the tensors: every tensor is a pure function of
(BASE_SEED, its state-dict key, its shape), so a re-implementation can rebuild the
exact same values from the key/shape manifest without diffusers or transformers:

    g = torch.Generator().manual_seed(seed_for(key))      # CPU mt19937
    ndim >= 2 ("weight" of conv/linear/embedding):  randn(shape, g) * gain(key) / sqrt(prod(shape[1:]))
    ndim == 1 and key ends with "weight" (norm scale): 1 + 0.1 * randn(shape, g)
    ndim == 1 and key ends with "bias":               0.02 * randn(shape, g)
    key ends with "running_mean":                     0.1 * randn(shape, g)
    key ends with "running_var":                      0.5 + rand(shape, g)
    key ends with "num_batches_tracked":              tensor(0, int64)
All float tensors are float32.  gain(key) is 1.0 except GAIN_OVERRIDES below.

Used through ``musetalk_fixture.standin_models()``. Files written under <root>/models/ (the MuseTalk README's
names): musetalkV15/ (musetalk.json, unet.pth: diffusers 0.30 UNet key names), sd-vae/ (config.json,
diffusion_pytorch_model.bin: the OLD attention key names query/key/value/proj_attn), whisper/ (config.json,
preprocessor_config.json, pytorch_model.bin: WhisperForConditionalGeneration keys), face-parse-bisent/
(79999_iter.pth: BiSeNet; resnet18-5c106cde.pth: torchvision resnet18 keys, values overwritten by 79999_iter.pth).
"""
import hashlib
import json
import math
import os
import zlib

import torch

BASE_SEED = 20260301
GAIN_OVERRIDES = {
    # keep the decoded image mostly inside (-1, 1) so clamp() does not hide differences
    "decoder.conv_out.weight": 0.5,
}

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# openai/whisper-tiny config.json, the fields the model reads (suppress_tokens etc. omitted: decoder/generation only)
WHISPER_CONFIG = {
    "_name_or_path": "openai/whisper-tiny",
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257],
    "bos_token_id": 50257,
    "d_model": 384,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 4,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 4,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_length": 448,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "model_type": "whisper",
    "num_hidden_layers": 4,
    "num_mel_bins": 80,
    "pad_token_id": 50257,
    "scale_embedding": False,
    "torch_dtype": "float32",
    "transformers_version": "4.27.0.dev0",
    "use_cache": True,
    "vocab_size": 51865,
}

WHISPER_PREPROCESSOR = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}


def seed_for(key: str, base_seed: int = BASE_SEED) -> int:
    return (base_seed * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**62)


def make_tensor(key: str, shape, base_seed: int = BASE_SEED) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed_for(key, base_seed))
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g, dtype=torch.float32)
    n = torch.randn(shape, generator=g, dtype=torch.float32)
    if key.endswith("running_mean"):
        return 0.1 * n
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return n * (GAIN_OVERRIDES.get(key, 1.0) / math.sqrt(fan_in))
    if key.endswith("weight"):
        return 1.0 + 0.1 * n
    if key.endswith("bias"):
        return 0.02 * n
    raise ValueError(f"no rule for {key} {shape}")


def make_state_dict(shapes: dict, base_seed: int = BASE_SEED) -> dict:
    """shapes: {key: shape} (ordered). Returns {key: tensor}."""
    return {k: make_tensor(k, s, base_seed) for k, s in shapes.items()}


VAE_OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def vae_to_old_names(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        nk = k
        if ".mid_block.attentions.0." in k:
            for new, old in VAE_OLD_NAMES.items():
                if f".attentions.0.{new}." in k:
                    nk = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
                    break
        out[nk] = v
    return out


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shapes_of(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def vae_to_new_name(key: str) -> str:
    """The inverse of vae_to_old_names for one key (the tensors were seeded with today's names)."""
    if ".mid_block.attentions.0." in key:
        for new, old in VAE_OLD_NAMES.items():
            if f".attentions.0.{old}." in key:
                return key.replace(f".attentions.0.{old}.", f".attentions.0.{new}.")
    return key


def build_from_manifest(root: str, manifest_path: str, skip_unet: bool = False):
    """Torch only: writes the same files as build_all from weights_manifest.json (keys, shapes, order).

    The state-dict files come out with the manifest's sha256 under torch 2.13; whisper/preprocessor_config.json is
    written without its "mel_filters" list (the reference recomputes the filters), so its hash differs.
    """
    with open(manifest_path) as f:
        manifest = json.load(f)
    models = os.path.join(root, "models")
    configs = {"whisper/config.json": WHISPER_CONFIG, "whisper/preprocessor_config.json": WHISPER_PREPROCESSOR,
               "sd-vae/config.json": VAE_CONFIG, "musetalkV15/musetalk.json": UNET_CONFIG}
    for rel, entry in manifest["files"].items():
        path = os.path.join(models, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if rel in configs:
            with open(path, "w") as f:
                json.dump(configs[rel], f, indent=2)
            continue
        if skip_unet and rel.startswith("musetalkV15/"):
            continue
        keys = [(k, tuple(s)) for k, s in entry["keys"]]
        if rel.startswith("sd-vae/"):
            sd = {k: make_tensor(vae_to_new_name(k), s) for k, s in keys}
        elif rel.startswith("whisper/"):
            sd = {k: make_tensor(k, s) for k, s in keys if k != "proj_out.weight"}
            sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]  # tied, as in the real checkpoint
            sd = {k: sd[k] for k, _ in keys}
        else:
            sd = {k: make_tensor(k, s) for k, s in keys}
        torch.save(sd, path)
        print("wrote", rel, os.path.getsize(path), "sha256 matches" if sha256(path) == entry["sha256"] else
              "sha256 DIFFERS", flush=True)
