"""Time to first token and decode speed: the torch-free runtime (ONNX Runtime CPU) against
transformers eager, at budgets 100% (method none) and 20% (HiRED).

    python benchmarks/generation.py                       # tiny-llava
    python benchmarks/generation.py --model benchmarks/recipes/llava-1b.toml --runs 2

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

import numpy as np
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
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt", default="Describe the image in detail.")
    args = parser.parse_args()

    from PIL import Image, ImageDraw
    from transformers import AutoProcessor
    from transformers.utils import logging as hf_logging

    from edgecompress import export_bundle
    from edgecompress.flops import ttft_flops
    from edgecompress.models.llava import load_llava, pruned_vision
    from edgecompress.recipes import resolve_model
    from edgecompress.reference import chat_text
    from edgecompress.selection.methods import get_method
    from edgecompress_runtime import Pipeline

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    image = Image.new("RGB", (480, 360), (230, 230, 215))
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 40, 150, 160), fill=(20, 60, 200))
    draw.ellipse((260, 80, 420, 240), fill=(240, 200, 0))

    spec = resolve_model(args.model)
    adapter = load_llava(spec, dtype=torch.float32)
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
            k = pipe.k
            text_tokens = first.prompt_tokens - k

            module = pruned_vision(adapter, get_method(method), k)
            ids = processor.tokenizer(text, return_tensors="pt")["input_ids"][0]
            at = int((ids == adapter.image_token_id).nonzero()[0, 0])
            embed = model.get_input_embeddings()

            def embeds_for_prompt():
                pixel_values = torch.from_numpy(
                    np.asarray(processor.image_processor(image, return_tensors="np")["pixel_values"])
                )
                image_embeds, _ = module(pixel_values)
                return torch.cat([embed(ids[None, :at]), image_embeds, embed(ids[None, at + 1 :])], dim=1)

            with torch.no_grad():
                def ttft():
                    e = embeds_for_prompt()
                    model(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2], dtype=torch.long), logits_to_keep=1)

                def whole():
                    e = embeds_for_prompt()
                    model.generate(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2], dtype=torch.long),
                                   max_new_tokens=n, min_new_tokens=n, do_sample=False)

                ttft()
                hf_ttft = timed(ttft, args.runs)
                hf_total = timed(whole, max(1, args.runs // 2))
            hf_tps = (n - 1) / max(hf_total - hf_ttft, 1e-9)
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
