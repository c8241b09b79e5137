"""Tiny random diffusers text-to-image flow-matching pipelines, built offline, for tests.

Nothing here downloads anything: every tokenizer is built from a vocabulary written in this file and
every model from a tiny config with random (seeded) weights. Each ``make_*`` function assembles a
pipeline, writes it with ``save_pretrained`` and returns the folder, which tests then open with
``diffusers.DiffusionPipeline.from_pretrained(folder)``.

Both pipelines use a VAE with two blocks, so ``vae_scale_factor == 2``: a 32x32-pixel image has a
16x16 latent with 16 channels (like the real SD3 / Flux VAEs).

* SD3: ``SD3Transformer2DModel`` with patch_size 2, in/out_channels 16, sample_size 16 (the
  pipeline's default height/width is ``sample_size * vae_scale_factor`` = 32 px); ``output_type="latent"``
  gives ``(batch, 16, H / 2, W / 2)``. Height and width must be multiples of 4 (``vae_scale_factor *
  patch_size``) and at most 128 px (``pos_embed_max_size`` 32 patches).
* Flux: ``FluxTransformer2DModel`` on 2x2-packed latents, in_channels 64 = 4 * 16; ``output_type="latent"``
  gives packed latents ``(batch, (H / 4) * (W / 4), 64)``. Height and width must be multiples of 4.
"""

from __future__ import annotations

import json
import pathlib
import string
import tempfile

import torch

#: Byte-level BPE end-of-word marker used by CLIP's vocabulary.
_EOW = "</w>"
#: SentencePiece word-start marker used by T5's vocabulary.
_SPM_SPACE = "\u2581"

#: Words that get whole-word tokens in both tokenizers (everything else falls back to characters).
_COMMON_WORDS = (
    "a an the of in on at with and or to by for from is are this that photo picture image painting "
    "drawing portrait landscape cat dog bird horse car house tree flower city street mountain river sea "
    "sky sun moon night day red blue green yellow black white small big old young man woman person "
    "girl boy astronaut riding sitting standing beautiful detailed high quality style art"
).split()

#: Tiny sizes shared by both pipelines.
_LATENT_CHANNELS = 16
_VAE_BLOCKS = (8, 16)  # two blocks -> vae_scale_factor 2
_CLIP_MAX_LENGTH = 77
_T5_DIM = 32


# --------------------------------------------------------------------------------------- tokenizers


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges to one word's symbols: repeatedly merge the best-ranked adjacent pair."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary in CLIP's layout, and its merges.

    Ids: the 256 byte-level characters, the same characters with ``</w>`` (a word's last symbol), one
    token per merge result, then ``<|startoftext|>`` and ``<|endoftext|>``. The merges make every word of
    ``_COMMON_WORDS`` a single token; any other UTF-8 text splits into smaller pieces / byte characters.
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + _EOW] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in _COMMON_WORDS:
        # merge what the earlier merges leave of the word, first pair first, until it is one token; a
        # new merge ranks last, so it changes neither the earlier words nor the earlier steps on this one
        symbols = _bpe([*word[:-1], word[-1] + _EOW], ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(ranks)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            symbols = _bpe(symbols, ranks)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, list(ranks)


def _clip_tokenizer():
    """A ``CLIPTokenizer`` from a ``vocab.json`` + ``merges.txt`` written here (model_max_length 77).

    bos ``<|startoftext|>``, eos = pad = unk ``<|endoftext|>``, like the real CLIP tokenizers.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=_CLIP_MAX_LENGTH)


def _t5_tokenizer():
    """A ``T5TokenizerFast`` wrapping a ``tokenizers.Tokenizer`` with a small Unigram model.

    Ids 0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>`` (T5's layout), then ``▁``, single characters (ASCII
    letters, digits, punctuation, a few accented letters) with and without a leading ``▁``, and whole-word
    pieces ``▁word`` for ``_COMMON_WORDS``. No sentinel ``<extra_id_*>`` tokens. Pre-tokenizer, decoder
    and post-processor (append ``</s>``) are the ones ``T5TokenizerFast`` itself uses, so the tokenizer
    round-trips unchanged through ``save_pretrained`` / ``from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (_SPM_SPACE, -3.0)]
    seen = {piece for piece, _ in pieces}
    characters = string.ascii_letters + string.digits + string.punctuation + "àâäáçéèêëíîïñóôöúùûü"
    for ch in characters:
        for piece, score in ((ch, -8.0), (_SPM_SPACE + ch, -8.5)):
            if piece not in seen:
                pieces.append((piece, score))
                seen.add(piece)
    for word in _COMMON_WORDS:  # whole words score better than their characters
        piece = _SPM_SPACE + word
        if piece not in seen:
            pieces.append((piece, -5.0))
            seen.add(piece)

    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=_SPM_SPACE, prepend_scheme="always", split=True),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=_SPM_SPACE, prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )


# ------------------------------------------------------------------------------------ text encoders


def _clip_config(tokenizer, *, hidden_size: int, projection_dim: int | None = None):
    """A 2-layer ``CLIPTextConfig`` sized to ``tokenizer`` (vocab, 77 positions, bos/eos/pad ids)."""
    from transformers import CLIPTextConfig

    kwargs = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,  # SD3 reads hidden_states[-2]
        num_attention_heads=2,
        max_position_embeddings=_CLIP_MAX_LENGTH,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # pooled output = hidden state at the first eos
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def _clip_encoder(tokenizer, *, hidden_size: int, seed: int):
    """A random ``CLIPTextModel`` (Flux's text encoder): pooled output has ``hidden_size`` features."""
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(_clip_config(tokenizer, hidden_size=hidden_size)).eval()


def _clip_encoder_with_projection(tokenizer, *, hidden_size: int, projection_dim: int, seed: int):
    """A random ``CLIPTextModelWithProjection`` (SD3's text encoders): text_embeds have ``projection_dim``."""
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = _clip_config(tokenizer, hidden_size=hidden_size, projection_dim=projection_dim)
    return CLIPTextModelWithProjection(config).eval()


def _t5_encoder(tokenizer, *, d_model: int = _T5_DIM, seed: int):
    """A random 1-layer ``T5EncoderModel`` with ``d_model`` features per token, sized to ``tokenizer``."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config).eval()


# ---------------------------------------------------------------------------------- image models


def _vae(*, scaling_factor: float, shift_factor: float, seed: int):
    """A random two-block ``AutoencoderKL``: 3 <-> 16 channels, 2x down-sampling (vae_scale_factor 2).

    No quant convs, with ``scaling_factor`` / ``shift_factor`` like the SD3 and Flux VAEs.
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(_VAE_BLOCKS),
        up_block_types=("UpDecoderBlock2D",) * len(_VAE_BLOCKS),
        block_out_channels=_VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=_LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def _sd3_transformer(*, joint_attention_dim: int, pooled_projection_dim: int, seed: int):
    """A random 1-layer ``SD3Transformer2DModel``: 16 latent channels, 2x2 patches, width 16 (2 heads x 8)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=16,  # latent pixels: default image 16 * vae_scale_factor = 32 px
        patch_size=2,
        in_channels=_LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        caption_projection_dim=16,  # = num_attention_heads * attention_head_dim
        pooled_projection_dim=pooled_projection_dim,
        pos_embed_max_size=32,  # up to 32x32 patches = 128x128 px
    ).eval()


def _flux_transformer(*, joint_attention_dim: int, pooled_projection_dim: int, guidance_embeds: bool, seed: int):
    """A random ``FluxTransformer2DModel`` with 1 double + 1 single block on 2x2-packed latents.

    in_channels = 4 * 16, width 32 (2 heads x 16), rope axes (4, 6, 6) summing to the head dim.
    """
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * _LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=pooled_projection_dim,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    ).eval()


# -------------------------------------------------------------------------------------- schedulers


def _sd3_scheduler(shift: float):
    """``FlowMatchEulerDiscreteScheduler`` with a static ``shift`` (SD3 uses 3.0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def _flux_scheduler():
    """``FlowMatchEulerDiscreteScheduler`` with resolution-dependent shift, as in Flux-dev's config."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )


# ------------------------------------------------------------------------------------------ public


def make_sd3_pipeline(path, *, shift: float = 3.0, seed: int = 0) -> pathlib.Path:
    """Save a tiny random ``StableDiffusion3Pipeline`` to ``path`` and return it as a ``Path``.

    Text: two ``CLIPTextModelWithProjection`` (hidden 16, projection 32 each) and a ``T5EncoderModel``
    (d_model 32), so ``prompt_embeds`` is ``(batch, 77 + max_sequence_length, 32)`` and
    ``pooled_prompt_embeds`` is ``(batch, 64)``. Latents: ``(batch, 16, H / 2, W / 2)``.
    """
    from diffusers import StableDiffusion3Pipeline

    clip_hidden, clip_projection = 16, 32
    tokenizer, tokenizer_2, tokenizer_3 = _clip_tokenizer(), _clip_tokenizer(), _t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=_sd3_transformer(
            joint_attention_dim=_T5_DIM,  # the two CLIP hidden states (16 + 16) are zero-padded to this
            pooled_projection_dim=2 * clip_projection,
            seed=seed,
        ),
        scheduler=_sd3_scheduler(shift),
        vae=_vae(scaling_factor=1.5305, shift_factor=0.0609, seed=seed + 1),
        text_encoder=_clip_encoder_with_projection(
            tokenizer, hidden_size=clip_hidden, projection_dim=clip_projection, seed=seed + 2
        ),
        tokenizer=tokenizer,
        text_encoder_2=_clip_encoder_with_projection(
            tokenizer_2, hidden_size=clip_hidden, projection_dim=clip_projection, seed=seed + 3
        ),
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_encoder(tokenizer_3, seed=seed + 4),
        tokenizer_3=tokenizer_3,
    )
    path = pathlib.Path(path)
    pipe.save_pretrained(path)
    return path


def make_flux_pipeline(path, *, guidance_embeds: bool = True, seed: int = 0) -> pathlib.Path:
    """Save a tiny random ``FluxPipeline`` to ``path`` and return it as a ``Path``.

    ``guidance_embeds=True`` is guidance-distilled like Flux-dev (``guidance_scale`` is fed to the
    transformer); ``False`` is like Flux-schnell (``guidance_scale`` is ignored). Text: a ``CLIPTextModel``
    (hidden 32: ``pooled_prompt_embeds`` ``(batch, 32)``) and a ``T5EncoderModel`` (d_model 32:
    ``prompt_embeds`` ``(batch, max_sequence_length, 32)``). Latents are packed: ``(batch, H*W / 16, 64)``.
    """
    from diffusers import FluxPipeline

    clip_hidden = 32
    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    pipe = FluxPipeline(
        scheduler=_flux_scheduler(),
        vae=_vae(scaling_factor=0.3611, shift_factor=0.1159, seed=seed + 1),
        text_encoder=_clip_encoder(tokenizer, hidden_size=clip_hidden, seed=seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, seed=seed + 4),
        tokenizer_2=tokenizer_2,
        transformer=_flux_transformer(
            joint_attention_dim=_T5_DIM,
            pooled_projection_dim=clip_hidden,
            guidance_embeds=guidance_embeds,
            seed=seed,
        ),
    )
    path = pathlib.Path(path)
    pipe.save_pretrained(path)
    return path
