"""Build the embedded ``tiny-llava`` and ``tiny-llava-next`` checkpoints, deterministically and offline.

Each checkpoint is a real llava-hf layout folder written with ``save_pretrained``: a
``LlavaForConditionalGeneration`` (or ``LlavaNextForConditionalGeneration``: CLIP vision tower
at 336 px / patch 14 = 576 patches + CLS, a small Llama) with seeded weights, a byte-level BPE
tokenizer trained on a fixed corpus, a CLIP (or LLaVA-NeXT anyres) image processor, and the
LLaVA-1.5 chat template. It is built once into the cache and
then loaded through ``from_pretrained`` like any other checkpoint: the same adapter and code
path as llava-1.5-7b.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgecompress.recipes import Recipe

BUILDER_VERSION = 1

# The LLaVA-1.5 conversation format, as llava-hf's chat template renders one user turn:
# "USER: <image>\n{text} ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>"]  # ids 0..3, matching the recipe config

_CORPUS = """
USER: What is in the picture? ASSISTANT: A red circle and a blue square on a grey background.
USER: How many shapes are there? ASSISTANT: There are three shapes: one, two, three, four, five.
USER: What colour is the triangle? ASSISTANT: The triangle is green. Yellow, orange, purple, white, black.
USER: Where is the star? ASSISTANT: The star is in the top left corner, above the cat, below the dog.
USER: Is there a small object on the right? ASSISTANT: Yes, a small cyan dot on the right side. No.
USER: Describe the image in detail. ASSISTANT: A photo of a street with cars, people, trees and a sky.
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 11 12
Please answer with a single word. Answer the question using one word or phrase.
"""


def _corpus() -> list[str]:
    lines = [line.strip() for line in _CORPUS.strip().splitlines()]
    return lines * 8


def build_tokenizer(vocab_size: int, max_length: int = 2048, corpus: list[str] | None = None):
    """A byte-level BPE tokenizer (any text encodes), trained deterministically on the fixed
    corpus plus ``corpus`` (the trained tiny-llava adds every question and answer it uses)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus() + [line for line in corpus or [] for _ in range(8)], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=max_length,
        padding_side="left",
    )


# Qwen2.5-VL's chat template for one image and text per turn (the published template's
# behaviour for such messages: a default system turn, the image between vision markers).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# ids 0..6, matching the tiny Qwen recipe's config
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2 / Qwen2.5 checkpoints)
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")


def build_qwen_tokenizer(vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer and special tokens, trained on the
    fixed corpus in Qwen's chat format; no BOS (as Qwen adds none)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [line.replace("USER: ", "<|im_start|>user\n").replace(" ASSISTANT: ", "<|im_end|>\n<|im_start|>assistant\n")
              for line in _corpus()]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        model_max_length=max_length,
        padding_side="left",
    )


def build_qwen_image_processor(recipe: Recipe):
    """Qwen's image processor (the PIL one: torchvision is absent) with the recipe's patch sizes;
    pixel bounds as Qwen2.5-VL ships them, so transformers resizes an image as the model's own
    processor would. Saved beside the tokenizer (which carries the chat template) rather than as a
    Qwen2_5_VLProcessor: that class insists on a video processor, which needs torchvision."""
    from transformers import Qwen2VLImageProcessorPil

    pre = recipe.preprocess
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
        patch_size=pre["patch_size"], temporal_patch_size=pre["temporal_patch_size"], merge_size=pre["merge_size"],
        image_mean=pre["image_mean"], image_std=pre["image_std"], rescale_factor=pre["rescale_factor"], resample=3,
    )


def build_processor(recipe: Recipe, tokenizer):
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil, LlavaNextProcessor, LlavaProcessor

    pre = recipe.preprocess
    next_ = recipe.family == "llava-next"
    extra = {"image_grid_pinpoints": recipe.config["image_grid_pinpoints"], "do_pad": True} if next_ else {}
    image_processor = (LlavaNextImageProcessorPil if next_ else CLIPImageProcessorPil)(
        **extra,
        size={"shortest_edge": pre["resize_shortest_edge"]},
        crop_size={"height": pre["crop_size"], "width": pre["crop_size"]},
        do_center_crop=True,
        do_resize=True,
        do_rescale=True,
        rescale_factor=pre["rescale_factor"],
        do_normalize=True,
        image_mean=pre["image_mean"],
        image_std=pre["image_std"],
        do_convert_rgb=True,
        resample=3,  # PIL bicubic
    )
    vision = recipe.config["vision_config"]
    return (LlavaNextProcessor if next_ else LlavaProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision["patch_size"],
        vision_feature_select_strategy=recipe.config.get("vision_feature_select_strategy", "default"),
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def build_model(recipe: Recipe):
    import torch

    if recipe.family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        torch.manual_seed(recipe.seed)
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**recipe.config))
        # the seeded generation config carries the chat's end-of-turn (Qwen's <|im_end|>)
        model.generation_config.eos_token_id = [QWEN_SPECIAL_TOKENS.index("<|im_end|>")]
        return model.eval()
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration

    if recipe.family == "llava-next":
        config_class, model_class = LlavaNextConfig, LlavaNextForConditionalGeneration
    else:
        config_class, model_class = LlavaConfig, LlavaForConditionalGeneration
    config = config_class(**recipe.config)
    torch.manual_seed(recipe.seed)
    model = model_class(config)
    model.eval()
    return model


def recipe_digest(recipe: Recipe) -> str:
    payload = json.dumps(
        {"builder": BUILDER_VERSION, "config": recipe.config, "seed": recipe.seed, "pre": recipe.preprocess},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))


def _build_atomically(folder: Path, marker: str, write) -> Path:
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process built it first
            if not (folder / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_text_assets(recipe: Recipe, folder: Path) -> None:
    text = recipe.config["text_config"]
    if recipe.family == "qwen2.5-vl":
        tokenizer = build_qwen_tokenizer(text["vocab_size"], text.get("max_position_embeddings", 2048))
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
        tokenizer.save_pretrained(folder)
        build_qwen_image_processor(recipe).save_pretrained(folder)
        return
    tokenizer = build_tokenizer(text["vocab_size"], text.get("max_position_embeddings", 2048))
    build_processor(recipe, tokenizer).save_pretrained(folder)


def ensure_tiny_checkpoint(recipe: Recipe) -> Path:
    """Return the folder of the built checkpoint, building it atomically if needed."""

    def write(staging: Path) -> None:
        build_model(recipe).save_pretrained(staging, safe_serialization=True)
        _write_text_assets(recipe, staging)

    return _build_atomically(cache_root() / "models" / f"{recipe.name}-{recipe_digest(recipe)}", "config.json", write)


def ensure_text_assets(recipe: Recipe) -> Path:
    """Only the tokenizer and processor of a built-in recipe (for --random-weights: no model weights)."""
    folder = cache_root() / "text" / f"{recipe.name}-{recipe_digest(recipe)}"
    return _build_atomically(folder, "tokenizer.json", lambda staging: _write_text_assets(recipe, staging))
