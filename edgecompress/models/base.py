"""What every family adapter shares: the loaded parts, the language model's facts, the tokenizer
and chat template the runtime needs, and the decoder graph (one graph for prefill and decode,
the KV cache as flat inputs and outputs). A method that prunes inside the language model
(FastV) gets two graphs instead, from :mod:`edgecompress.models.pruned_decoder`: a prefill that
prunes, and decode steps whose pruned layers hold shorter caches.

A family adapter (``edgecompress/models/<family>.py``, registered in
:mod:`edgecompress.families`) subclasses :class:`FamilyAdapter` and adds its vision side:
:meth:`FamilyAdapter.plan_vision` returns the module the vision graph is exported from, its
example inputs, the graph's declared inputs and outputs and K. The compiler asks the adapter
for both plans and never branches on the family.

(Imports torch and transformers: import this module only where they are needed.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import DecoderPlan, VisionPlan, decoder_spec, past_axis, prefill_spec, torch_dtype


@dataclass
class FamilyAdapter:
    """The parts of a loaded (or seeded random) vision-language model the compiler needs."""

    config: Any  # the transformers config of the whole model
    vision_tower: Any
    projector: Any
    preprocess: dict[str, Any]
    prompt_template: str
    source: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the full *ForConditionalGeneration (None when built vision-only)
    checkpoint_dir: Path | None = None
    text_source: str | None = None  # folder or hub id holding the tokenizer and processor

    family = "?"  # the name in edgecompress.families.FAMILIES

    # -- loading: where the family's parts live in transformers' model ------------------------
    @classmethod
    def parts(cls, model) -> tuple[Any, Any]:
        """(vision tower, projector) of a loaded *ForConditionalGeneration."""
        return model.model.vision_tower, model.model.multi_modal_projector

    @classmethod
    def build_vision(cls, config) -> tuple[Any, Any]:
        """(vision tower, projector) alone, seeded random (``--vision-only --random-weights``)."""
        from transformers import CLIPVisionModel
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        return CLIPVisionModel(config.vision_config), LlavaMultiModalProjector(config)  # LLaVA-NeXT's has the same layers

    @classmethod
    def prepare(cls, config, preprocess: dict[str, Any], recipe_preprocess: dict[str, Any]) -> dict[str, Any]:
        """The preprocessing record of a loaded model (and any config fact the family derives from it)."""
        return preprocess

    # -- the vision side: each family's own ----------------------------------------------
    def plan_vision(self, method, budget: str, precision: str) -> VisionPlan:
        raise NotImplementedError

    def write_assets(self, plan: VisionPlan, staging: Path, precision: str) -> None:
        """Files the runtime needs beside the graphs for this family's packing (none by default)."""

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the language model: shared --------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def projected_dim(self) -> int:
        return int(self.config.text_config.hidden_size)

    def language_model_facts(self) -> dict[str, Any]:
        tc = self.config.text_config
        heads = tc.num_attention_heads
        return {
            "num_layers": tc.num_hidden_layers,
            "num_heads": heads,
            "num_kv_heads": getattr(tc, "num_key_value_heads", None) or heads,
            "head_dim": getattr(tc, "head_dim", None) or tc.hidden_size // heads,
            "hidden_size": tc.hidden_size,
            "vocab_size": tc.vocab_size,
            "max_position_embeddings": tc.max_position_embeddings,
        }

    def plan_decoder(self, precision: str) -> DecoderPlan:
        """The decoder graph's module, example inputs, declared IO and torch.export dynamic shapes."""
        from torch.export import Dim

        lm = self.language_model_facts()
        dtype = torch_dtype(precision)
        embeds = torch.randn(1, DECODER_EXAMPLE_SEQUENCE, lm["hidden_size"], dtype=dtype)
        positions = torch.arange(DECODER_EXAMPLE_PAST, DECODER_EXAMPLE_PAST + DECODER_EXAMPLE_SEQUENCE)[None]
        kv = (1, lm["num_kv_heads"], DECODER_EXAMPLE_PAST, lm["head_dim"])
        past = [torch.randn(kv, dtype=dtype) for _ in range(2 * lm["num_layers"])]
        limit = lm["max_position_embeddings"]
        sequence, past_axis = Dim("sequence", min=1, max=limit), Dim("past", min=0, max=limit)
        shapes = {
            "inputs_embeds": {1: sequence},
            "position_ids": {1: sequence},
            "past": tuple({2: past_axis} for _ in range(2 * lm["num_layers"])),
        }
        spec = decoder_spec(lm["num_layers"], lm["num_kv_heads"], lm["head_dim"], lm["hidden_size"],
                            lm["vocab_size"], precision)
        return DecoderPlan(self.decoder(), (embeds, positions, *past), spec, shapes, lm)

    def plan_pruned_decoder(self, method, layer: int, image_start: int, image_tokens: int, k: int,
                            precision: str) -> tuple[DecoderPlan, DecoderPlan]:
        """A decoder-stage method's two language-model graphs: the prefill that prunes the image
        tokens at decoder ``layer`` (the image at ``image_start``, N = ``image_tokens`` of them,
        K = ``k`` kept) and the decode step whose caches from ``layer`` on are shorter."""
        from torch.export import Dim

        from edgecompress.models.pruned_decoder import PrunedPrefill, SplitCacheDecoder

        lm = self.language_model_facts()
        method.resolve_layer(layer, lm["num_layers"])
        dtype = torch_dtype(precision)
        limit = lm["max_position_embeddings"]
        shortest = image_start + image_tokens + 1  # at least one text token after the image
        if shortest > limit:
            raise EdgeCompressError(f"the prompt's image ends at token {shortest - 1}, past the language model's "
                                    f"{limit} positions")
        dims = (lm["num_layers"], lm["num_kv_heads"], lm["head_dim"], lm["hidden_size"], lm["vocab_size"], precision)
        length = shortest + DECODER_EXAMPLE_SEQUENCE
        sequence = Dim("sequence", min=shortest, max=limit)
        prefill = DecoderPlan(
            PrunedPrefill(self, method, layer, image_start, image_tokens, k).eval(),
            (torch.randn(1, length, lm["hidden_size"], dtype=dtype), torch.arange(length)[None]),
            prefill_spec(*dims, layer=layer, image_tokens=image_tokens, kept=k),
            {"inputs_embeds": {1: sequence}, "position_ids": {1: sequence}},
            lm,
        )
        # example caches of different lengths, so torch.export keeps the two axes apart
        lengths = {"past": DECODER_EXAMPLE_PAST + 2, "past_pruned": DECODER_EXAMPLE_PAST}
        axes = {"past": Dim("past", min=0, max=limit), "past_pruned": Dim("past_pruned", min=0, max=limit)}
        kv = (1, lm["num_kv_heads"], None, lm["head_dim"])
        past, past_shapes = [], []
        for i in range(lm["num_layers"]):
            axis = past_axis(i, layer)
            past += [torch.randn(kv[0], kv[1], lengths[axis], kv[3], dtype=dtype) for _ in range(2)]
            past_shapes += [{2: axes[axis]}, {2: axes[axis]}]
        step = Dim("sequence", min=1, max=limit)
        start = lengths["past"]
        decode = DecoderPlan(
            SplitCacheDecoder(self, layer).eval(),
            (torch.randn(1, DECODER_EXAMPLE_SEQUENCE, lm["hidden_size"], dtype=dtype),
             torch.arange(start, start + DECODER_EXAMPLE_SEQUENCE)[None], *past),
            decoder_spec(*dims, pruned_from=layer),
            {"inputs_embeds": {1: step}, "position_ids": {1: step}, "past": tuple(past_shapes)},
            lm,
        )
        return prefill, decode

    def decoder(self) -> nn.Module:
        """The PyTorch module the decoder graph is exported from.

        It traces the eager attention path, not sdpa: torch exports sdpa as masked MatMul-Softmax
        plus IsNaN/Where guards over every [heads, S, S] score tensor, which slowed ONNX Runtime's
        prefill by a quarter to a third on tiny-llava; the eager path computes the same values (to
        fp32 round-off) without the guards.
        """
        if self.model is None:
            raise EdgeCompressError("this model was built without its language model (vision only)")
        self.model.model.language_model.config._attn_implementation = "eager"
        return Decoder(self).eval()

    def eos_token_ids(self) -> list[int]:
        eos = None
        if self.model is not None and getattr(self.model, "generation_config", None) is not None:
            eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = getattr(self.config.text_config, "eos_token_id", None)
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def save_tokenizer(self, folder: Path) -> str | None:
        """Write the fast tokenizer as tokenizer.json (what the torch-free runtime reads)."""
        if self.text_source is None:
            return None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.text_source)
        if not getattr(tokenizer, "is_fast", False):
            raise EdgeCompressError(f"{self.text_source} has no fast tokenizer (tokenizer.json) for the runtime")
        tokenizer.backend_tokenizer.save(str(Path(folder) / "tokenizer.json"))
        return "tokenizer.json"

    def load_processor(self):
        """transformers' processor of the checkpoint (the PyTorch reference pipelines use it)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(self.text_source)

    def chat_renderer(self):
        """What renders the checkpoint's chat template (an object with ``apply_chat_template``):
        transformers' processor; None where there is none offline."""
        if self.text_source is None:
            return None
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(self.text_source)
        except (OSError, ValueError, TypeError):
            return None

    def _render(self, renderer, messages) -> str | None:
        try:
            return renderer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (OSError, ValueError, TypeError):
            return None

    def chat_prompt_template(self) -> str:
        """The checkpoint's chat template rendered for one user turn, with {prompt} for the text.

        Rendering it here (with transformers) means the runtime needs no Jinja: it substitutes
        the user's text into this string. Falls back to the recipe's template.
        """
        sentinel = "EDGECOMPRESS_PROMPT_SENTINEL"
        renderer = self.chat_renderer()
        if renderer is not None:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sentinel}]}]
            text = self._render(renderer, messages)
            if text and text.count(sentinel) == 1:
                return text.replace(sentinel, "{prompt}")
        return self.prompt_template

    def chat_follow_up_template(self) -> str | None:
        """The text of a later user turn, with {prompt}: what the checkpoint's chat template renders
        after the previous answer (its end-of-turn and the next user turn, no image), e.g.
        "</s>USER: {prompt} ASSISTANT:". None where the template is unavailable or does not render
        a two-turn chat as the one-turn prompt, the answer, then the rest (the runtime then refuses
        follow-ups rather than guess the separators)."""
        renderer = self.chat_renderer()
        if renderer is None:
            return None
        first, answer, second = "EDGECOMPRESS_FIRST", "EDGECOMPRESS_ANSWER", "EDGECOMPRESS_SECOND"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first}]}]
        one = self._render(renderer, messages)
        messages += [{"role": "assistant", "content": [{"type": "text", "text": answer}]},
                     {"role": "user", "content": [{"type": "text", "text": second}]}]
        two = self._render(renderer, messages)
        if one is None or two is None:
            return None
        # The answer follows the one-turn prompt after at most whitespace (the model writes its own leading space).
        if not (two.startswith(one) and two.count(answer) == 1 and two.count(second) == 1
                and not two[len(one):two.index(answer)].strip()):
            return None
        rest = two[two.index(answer) + len(answer):]
        return rest.replace(second, "{prompt}")


DECODER_EXAMPLE_SEQUENCE, DECODER_EXAMPLE_PAST = 4, 3  # > 1, so torch.export keeps both axes symbolic


class Decoder(nn.Module):
    """(inputs_embeds, position_ids, *past) -> (last-token logits fp32, *present).

    The cache travels as flat tensors (past.{i}.key/value) so the graph has plain inputs
    and outputs; inside, a transformers DynamicCache is rebuilt from them.
    """

    def __init__(self, adapter: FamilyAdapter):
        super().__init__()
        self.language_model = adapter.model.model.language_model
        self.lm_head = adapter.model.lm_head
        self.config = adapter.config.text_config
        self.num_layers = adapter.config.text_config.num_hidden_layers

    def forward(self, inputs_embeds, position_ids, *past):
        cache = DynamicCache(config=self.config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.language_model(
            inputs_embeds=inputs_embeds, position_ids=position_ids, past_key_values=cache, use_cache=True
        )
        # select (a Gather), not a [:, -1:] slice: the output is then [1, 1, vocab] for any
        # sequence length, a static binding TensorRT can see as such.
        logits = self.lm_head(out.last_hidden_state.select(1, -1)).float().unsqueeze(1)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (logits, *present)
