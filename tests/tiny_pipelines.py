"""Tiny random pipelines of every architecture in the generator registry, built offline.

Each builder returns a diffusers pipeline of the same class (and component classes) as the real
model, small enough to run two denoising steps on a CPU in well under a second. Tokenizers are built
in code (no downloads): a character-level CLIP BPE, a T5 unigram and a Gemma BPE vocabulary.
Saved with ``save_pretrained``, each folder loads through the registry exactly like real weights.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

_CHARS = string.ascii_lowercase + string.digits + ".,;:-'()/"


def clip_tokenizer(max_length: int = 16):
    """A character-level CLIP tokenizer (byte-level BPE with no merges)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _CHARS:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 16):
    """A character-level T5 (unigram) tokenizer."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(ch, -3.0) for ch in _CHARS] + [("▁" + ch, -2.5) for ch in string.ascii_lowercase]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def gemma_tokenizer(max_length: int = 16):
    """A character-level Gemma tokenizer."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "▁": 5}
    for ch in _CHARS:
        vocab[ch] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _clip_text(tokenizer, with_projection: bool = False, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _t5_text(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _gemma_text(tokenizer, hidden: int = 8):
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        head_dim=4,
        hidden_size=hidden,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=1,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    return Gemma2Model(config).eval()


def _vae_kl(latent_channels: int = 4, blocks: int = 2, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(8,) * blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        **extra,
    ).eval()


def _sd_unet(cross_attention_dim: int = 32):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
    ).eval()


def stable_diffusion():
    """StableDiffusionPipeline (SD 1.x / 2.x): UNet + KL VAE + CLIP text encoder, PNDM scheduler."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    tok = clip_tokenizer()
    return StableDiffusionPipeline(
        vae=_vae_kl(),
        text_encoder=_clip_text(tok),
        tokenizer=tok,
        unet=_sd_unet(),
        scheduler=PNDMScheduler(skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def stable_diffusion_3():
    """StableDiffusion3Pipeline: MMDiT + two CLIPs with projection + T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    tok, tok3 = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae_kl(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_clip_text(tok, with_projection=True),
        tokenizer=tok,
        text_encoder_2=_clip_text(tok, with_projection=True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5_text(tok3, d_model=64),
        tokenizer_3=tok3,
    )


def flux():
    """FluxPipeline: Flux transformer + CLIP (pooled) + T5, latents packed 2x2."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ).eval()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae_kl(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_clip_text(tok),
        tokenizer=tok,
        text_encoder_2=_t5_text(tok2),
        tokenizer_2=tok2,
        transformer=transformer,
    )


def pixart_sigma():
    """PixArtSigmaPipeline: PixArt transformer (learned sigma) + T5."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    tok = t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    return PixArtSigmaPipeline(
        tokenizer=tok,
        text_encoder=_t5_text(tok),
        vae=_vae_kl(),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def sana():
    """SanaPipeline: linear-attention DiT + DC-AE + Gemma 2."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(0)
    tok = gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=32,
    ).eval()
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    return SanaPipeline(
        tokenizer=tok,
        text_encoder=_gemma_text(tok),
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def lumina2():
    """Lumina2Pipeline: Lumina next-DiT + Gemma 2 + KL VAE (4 blocks, with shift_factor)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    torch.manual_seed(0)
    tok = gemma_tokenizer()
    transformer = Lumina2Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=4,
        hidden_size=8,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=1,
        num_kv_heads=1,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        scaling_factor=1.0,
        axes_dim_rope=(4, 2, 2),
        cap_feat_dim=8,
    ).eval()
    return Lumina2Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae_kl(blocks=4, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=_gemma_text(tok),
        tokenizer=tok,
    )


def radedit_parts(root: Path) -> dict[str, Path]:
    """RadEdit's composition in miniature: each component saved in its own folder (as on the Hub).

    The UNet sits under ``unet/`` of a "radedit" repo, the VAE in its own repo (SDXL VAE), and the text
    encoder + tokenizer in a third (BioViL-T, a BERT; here a plain tiny BertModel loaded with AutoModel).
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    root = Path(root)
    radedit, vae_dir, text_dir = root / "radedit", root / "sdxl-vae", root / "biovil"
    vocab_file = root / "vocab.txt"
    root.mkdir(parents=True, exist_ok=True)
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_CHARS]) + "\n")
    tok = BertTokenizer(vocab_file=str(vocab_file), model_max_length=16)
    tok.save_pretrained(text_dir)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=32,
        ),
        add_pooling_layer=False,
    ).eval()
    bert.save_pretrained(text_dir)
    _sd_unet(cross_attention_dim=32).save_pretrained(radedit / "unet")
    _vae_kl().save_pretrained(vae_dir)
    return {"unet": radedit, "vae": vae_dir, "text": text_dir}


BUILDERS = {
    "StableDiffusionPipeline": stable_diffusion,
    "StableDiffusion3Pipeline": stable_diffusion_3,
    "FluxPipeline": flux,
    "PixArtSigmaPipeline": pixart_sigma,
    "SanaPipeline": sana,
    "Lumina2Pipeline": lumina2,
}

# Call kwargs the tiny models need at minimum size (the real entries carry their own).
TINY_CALL_KWARGS = {
    "StableDiffusionPipeline": {},
    "StableDiffusion3Pipeline": {"max_sequence_length": 16},
    "FluxPipeline": {"max_sequence_length": 16},
    "PixArtSigmaPipeline": {"use_resolution_binning": False, "max_sequence_length": 16},
    "SanaPipeline": {"use_resolution_binning": False, "complex_human_instruction": [], "max_sequence_length": 16},
    "Lumina2Pipeline": {"system_prompt": "", "max_sequence_length": 16},
}

# Smallest size each tiny model accepts (multiples of its VAE factor x patch size).
TINY_SIZE = {
    "StableDiffusionPipeline": 16,
    "StableDiffusion3Pipeline": 16,
    "FluxPipeline": 16,
    "PixArtSigmaPipeline": 16,
    "SanaPipeline": 32,
    "Lumina2Pipeline": 32,
}


def save(name: str, folder: Path) -> Path:
    """Build the tiny pipeline for a diffusers class name and save it (model_index.json + components)."""
    pipe = BUILDERS[name]()
    pipe.save_pretrained(folder)
    return Path(folder)
