"""Time to first token and decode speed: the torch-free runtime (ONNX Runtime CPU) against
transformers eager, at budgets 100% (method none) and 20% (HiRED).

    python benchmarks/generation.py                       # tiny-llava-random
    python benchmarks/generation.py --model benchmarks/recipes/llava-1b.toml --runs 2
    python benchmarks/generation.py --model tiny-llava-next --size 1000x480   # anyres: base + 1x3 tiles

Per budget: the runtime's TTFT (preprocess + vision + prefill) and decode tokens/s, and
transformers' for the same checkpoint (unpruned: processor + LlavaForConditionalGeneration;
20%: the pruned PyTorch vision module spliced into the same model). Next to the measured
100%/20% TTFT ratio it prints the ratio the FLOP count predicts (edgecompress/flops.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llava-random")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt", default="Describe the image in detail.")
    parser.add_argument("--size", default="480x360", help="test image width x height (LLaVA-NeXT picks its grid from it)")
    args = parser.parse_args()

    from PIL import Image, ImageDraw
    from transformers import AutoProcessor
    from transformers.utils import logging as hf_logging

    from edgecompress import export_bundle
    from edgecompress.flops import ttft_flops
    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model
    from edgecompress.reference import chat_text, vision_inputs
    from edgecompress.methods import get_method
    from edgecompress_runtime import Pipeline

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = Image.new("RGB", (width, height), (230, 230, 215))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 16, height // 9, width * 5 // 16, height * 4 // 9), fill=(20, 60, 200))
    draw.ellipse((width * 9 // 16, height * 2 // 9, width * 7 // 8, height * 2 // 3), fill=(240, 200, 0))

    spec = resolve_model(args.model)
    adapter = load_model(spec, dtype=torch.float32)
    model = adapter.model
    processor = AutoProcessor.from_pretrained(adapter.text_source)
    text = chat_text(processor, args.prompt)
    n = args.new_tokens
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget, method in (("100%", "none"), ("20%", "hired")):
            bundle = export_bundle(
                args.model, method=method, budget=None if method == "none" else budget, precision="fp32", out=Path(tmp) / method
            )
            pipe = Pipeline.load(bundle)
            first = pipe.generate_full(image, args.prompt, max_new_tokens=n)
            results = [pipe.generate_full(image, args.prompt, max_new_tokens=n) for _ in range(args.runs)]
            ort_ttft = statistics.median(r.timings["ttft_s"] for r in results)
            ort_tps = statistics.median(r.timings["decode_tokens"] / r.timings["decode_s"] for r in results)
            text_tokens = len(pipe.prompt_ids(args.prompt)) - 1  # without the image placeholder
            k = first.prompt_tokens - text_tokens  # image tokens the language model read

            ids = processor.tokenizer(text, return_tensors="pt")["input_ids"][0]
            at = int((ids == adapter.image_token_id).nonzero()[0, 0])
            embed = model.get_input_embeddings()
            if pipe.newline is not None:  # unpruned LLaVA-NeXT: transformers' own tiling and packing
                module = None
            else:
                module = adapter.plan_vision(get_method(method), budget, "fp32").module

            def embeds_for_prompt():
                if module is None:
                    inputs = processor(images=image, text=text, return_tensors="pt")
                    return model.model.get_input_embeddings()(inputs["input_ids"]), inputs
                image_embeds, _ = module(*vision_inputs(model, processor, image))
                return torch.cat([embed(ids[None, :at]), image_embeds, embed(ids[None, at + 1 :])], dim=1), None

            with torch.no_grad():
                def ttft():
                    e, inputs = embeds_for_prompt()
                    if inputs is not None:
                        return model(**inputs, logits_to_keep=1)
                    model(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2], dtype=torch.long), logits_to_keep=1)

                def whole():
                    e, inputs = embeds_for_prompt()
                    if inputs is not None:
                        return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
                    model.generate(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2], dtype=torch.long),
                                   max_new_tokens=n, min_new_tokens=n, do_sample=False)

                ttft()
                hf_ttft = timed(ttft, args.runs)
                hf_total = timed(whole, max(1, args.runs // 2))
            # decode = whole generation - TTFT; with few runs the two medians can cross (noise)
            hf_tps = (n - 1) / (hf_total - hf_ttft) if hf_total > hf_ttft else float("nan")
            flops = ttft_flops(adapter.config.to_dict(), adapter.feature_layer, k, text_tokens)
            rows.append(dict(budget=budget, method=method, k=k, prompt=first.prompt_tokens, ort_ttft=ort_ttft,
                             hf_ttft=hf_ttft, ort_tps=ort_tps, hf_tps=hf_tps, flops=flops))

    import onnxruntime

    print(f"\nmodel {spec.name}, fp32, {platform.machine()} CPU, {torch.get_num_threads()} threads, onnxruntime "
          f"{onnxruntime.__version__}, torch {torch.__version__}; medians of {args.runs} runs, {n} new tokens\n")
    print("| budget | method | K | prompt tokens | TTFT runtime (ms) | TTFT transformers (ms) | decode runtime (tok/s) | decode transformers (tok/s) | TTFT GFLOP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']} | {r['method']} | {r['k']} | {r['prompt']} | {r['ort_ttft'] * 1e3:.1f} | {r['hf_ttft'] * 1e3:.1f} | "
              f"{r['ort_tps']:.1f} | {r['hf_tps']:.1f} | {r['flops'] / 1e9:.2f} |")
    full, pruned = rows
    print(f"\nTTFT ratio 100%/20%: runtime {full['ort_ttft'] / pruned['ort_ttft']:.2f}x, transformers "
          f"{full['hf_ttft'] / pruned['hf_ttft']:.2f}x, FLOP prediction {full['flops'] / pruned['flops']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
