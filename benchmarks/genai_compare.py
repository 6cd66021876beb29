"""Decode and prefill against onnxruntime-genai on the same weights, side by side in one run.

    pip install onnxruntime-genai          # optional: only this script needs it
    python benchmarks/genai_compare.py     # tiny-llava's language model, fp32, CPU
    python benchmarks/genai_compare.py --bundle out/tiny-llava-hired-b20 --prompt-tokens 140 --new-tokens 64 --runs 10
    python benchmarks/genai_compare.py --bundle NEW --before OLD   # also OLD's fused graph, same weights

The language model of the bundle's checkpoint is saved alone as a LlamaForCausalLM folder and
built by onnxruntime-genai's model builder (offline, `-p fp32 -e cpu`). Both then run the same
prompt token ids (a text prompt of --prompt-tokens tokens; genai has no image input, so the
comparison is the language model's: prefill and decode), greedy, alternating runs so that all
see the same machine state. A bundle exported with --decoder-ops onnxruntime is measured twice:
its standard decoder graph and its fused one (what the ONNX Runtime backend runs). Printed: prefill ms, decode ms per token, tokens/s (medians), and
whether the greedy tokens agree.

Every runtime runs in a process of its own, started per timed run, under one protocol: load
(not timed), three warm-up generations, then the median of three timed ones (the C++ runtime's
tool, tests/tools/decode_bench.cpp, does the same). ONNX Runtime sessions in one process each keep
a thread pool whose idle threads spin, and on a 2-core machine the pools of the sessions not
running took the cores of the one that was (the Python runtime's decode measured 0.38 ms/token
next to the other pipelines in-process, 0.29 ms alone); and a long-lived process measured
against fresh ones is not the same measurement either.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def save_language_model(bundle: Path, folder: Path) -> None:
    """The bundle's checkpoint's language model + lm_head as a LlamaForCausalLM folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from edgecompress.models.loading import load_model
    from edgecompress.recipes import resolve_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    adapter = load_model(resolve_model(manifest["recipe"]["name"]), dtype=torch.float32)
    text = adapter.model.config.text_config.to_dict()
    config = LlamaConfig(**{k: v for k, v in text.items() if k in LlamaConfig().to_dict()})
    lm = LlamaForCausalLM(config)
    lm.model.load_state_dict(adapter.model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(adapter.model.lm_head.state_dict())
    lm.save_pretrained(folder)
    AutoTokenizer.from_pretrained(adapter.text_source).save_pretrained(folder)


def ours(pipe, ids: list[int], new_tokens: int) -> tuple[float, float, list[int]]:
    """The bundle's decoder graph through the runtime's backend, greedy with end-of-sequence
    masked (genai's min_length does the same), so both generate every token."""
    backend = pipe.backend
    eos = sorted(pipe.eos_token_ids)

    def pick(row) -> int:
        row[eos] = -np.inf  # the backend's logits buffer (or a copy): overwritten by the next step anyway
        return int(row.argmax())

    start = time.perf_counter()
    logits, past = backend.decoder(pipe.embed(ids), np.arange(len(ids), dtype=np.int64)[None], backend.empty_past())
    prefill = time.perf_counter() - start
    tokens = [pick(logits[0, -1])]
    start = time.perf_counter()
    for i in range(new_tokens - 1):  # the step Pipeline.decode takes
        row, past = backend.step(pipe.embed_table[tokens[-1]], len(ids) + i, past)
        tokens.append(pick(row))
    return prefill, (time.perf_counter() - start) / (new_tokens - 1), tokens


CPP_TOOL = Path(__file__).resolve().parents[1] / "runtimes" / "cpp" / "build" / "decode_bench"


def cpp(bundle: Path, ids: list[int], new_tokens: int, spinning: bool = True) -> tuple[float, float, list[int]]:
    """The C++ runtime's loop (runtimes/cpp, tests/tools/decode_bench.cpp: the same protocol as
    ``timed_runs``; loading is not timed), the same ids, end-of-sequence masked."""
    done = subprocess.run([str(CPP_TOOL), str(bundle), ",".join(map(str, ids)), str(new_tokens)]
                          + ([] if spinning else ["no-spinning"]),
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    return result["prefill_ms"] / 1e3, result["decode_ms_per_token"] / 1e3, result["tokens"]


def worker(bundle: Path, graph: str, spinning: bool, ids: list[int], new_tokens: int) -> tuple[float, float, list[int]]:
    """``ours`` (graph --fused or --standard) or genai's (--genai, ``bundle`` its model folder) in a
    process of its own, under ``timed_runs``."""
    done = subprocess.run([sys.executable, __file__, "--worker", str(bundle), graph,
                           "--spinning" if spinning else "--no-spinning", ",".join(map(str, ids)), str(new_tokens)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["prefill"], result["decode"], result["tokens"]


WARM_UP, TIMED = 3, 3  # per worker process: warm-up generations (a fresh session's first runs grow its arena), timed ones


def timed_runs(generate) -> dict:
    """The worker protocol: WARM_UP generations, then the medians of TIMED ones."""
    for _ in range(WARM_UP):
        generate()
    runs = [generate() for _ in range(TIMED)]
    return {"prefill": statistics.median(r[0] for r in runs), "decode": statistics.median(r[1] for r in runs),
            "tokens": runs[-1][2]}


def run_worker(argv: list[str]) -> int:
    graph, ids, new_tokens = argv[1], [int(i) for i in argv[3].split(",")], int(argv[4])
    if graph == "--genai":
        import onnxruntime_genai as og

        model = og.Model(argv[0])
        print(json.dumps(timed_runs(lambda: genai(model, og, ids, new_tokens))))
        return 0
    from edgecompress_runtime import Pipeline
    from edgecompress_runtime.backends import OnnxRuntimeBackend
    from edgecompress_runtime.bundle import open_bundle

    bundle, spinning = Path(argv[0]), argv[2]
    manifest = open_bundle(bundle)
    backend = OnnxRuntimeBackend(bundle, manifest, fused=graph == "--fused", spinning=spinning == "--spinning")
    pipe = Pipeline(bundle, manifest, backend)
    print(json.dumps(timed_runs(lambda: ours(pipe, ids, new_tokens))))
    return 0


def genai(model, og, ids: list[int], new_tokens: int) -> tuple[float, float, list[int]]:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False, min_length=len(ids) + new_tokens)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    generator.generate_next_token()
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        generator.generate_next_token()
    decode = (time.perf_counter() - start) / (new_tokens - 1)
    return prefill, decode, [int(t) for t in generator.get_sequence(0)[len(ids):]]


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        return run_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("out/tiny-llava-hired-b20"))
    parser.add_argument("--prompt-tokens", type=int, default=140)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", type=Path, help="another export of the same weights whose fused decoder graph "
                        "is measured too (an older edgecompress's, for a before/after table)")
    parser.add_argument("--no-spinning", action="store_true", help="ONNX Runtime's idle threads sleep in "
                        "edgecompress's sessions (Python and C++); genai keeps its own settings")
    args = parser.parse_args()
    try:
        import onnxruntime_genai as og
    except ImportError:
        print("this comparison needs onnxruntime-genai: pip install onnxruntime-genai", file=sys.stderr)
        return 2
    import onnxruntime

    from edgecompress_runtime import Pipeline
    from edgecompress_runtime.backends import OnnxRuntimeBackend
    from edgecompress_runtime.bundle import open_bundle

    manifest = open_bundle(args.bundle)
    spinning = not args.no_spinning
    # (bundle, fused graph?) per edgecompress runtime, each run in a worker process
    pipes = {"edgecompress, standard graph": (args.bundle, False)}
    if "decoder" in manifest.onnxruntime_graphs:
        pipes["edgecompress, fused graph"] = (args.bundle, True)
    if args.before is not None:
        pipes[f"edgecompress, fused graph of {args.before.name}"] = (args.before, True)
    pipe = Pipeline(args.bundle, manifest, OnnxRuntimeBackend(args.bundle, manifest, fused=False))  # the token table
    vocab = pipe.embed_table.shape[0]
    ids = [int(i) for i in np.random.default_rng(0).integers(4, vocab, args.prompt_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        save_language_model(args.bundle, Path(tmp) / "hf")
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(Path(tmp) / "hf"),
                        "-o", str(Path(tmp) / "genai"), "-p", "fp32", "-e", "cpu"], check=True, capture_output=True)
        with_cpp = CPP_TOOL.exists()  # bash runtimes/cpp/build.sh
        results = {**{name: [] for name in pipes}, **({"edgecompress C++ runtime": []} if with_cpp else {}),
                   "onnxruntime-genai": []}
        del pipe
        for _ in range(args.runs):
            for name, (bundle, fused) in pipes.items():
                results[name].append(worker(bundle, "--fused" if fused else "--standard", spinning, ids, args.new_tokens))
            if with_cpp:
                results["edgecompress C++ runtime"].append(cpp(args.bundle, ids, args.new_tokens, not args.no_spinning))
            results["onnxruntime-genai"].append(worker(Path(tmp) / "genai", "--genai", True, ids, args.new_tokens))
    print(f"\n{args.bundle.name}'s language model, fp32, {platform.machine()} CPU; onnxruntime {onnxruntime.__version__}, "
          f"onnxruntime-genai {og.__version__}; prompt {args.prompt_tokens} tokens, {args.new_tokens} new; medians of "
          f"{args.runs} alternating worker processes, each the median of {TIMED} timed generations after {WARM_UP} warm-ups\n")
    print("| runtime | prefill ms | decode ms / token | decode tokens/s | greedy tokens vs genai |")
    print("|---|---|---|---|---|")
    reference = results["onnxruntime-genai"][0][2]
    for name, runs in results.items():
        prefill = statistics.median(r[0] for r in runs) * 1e3
        decode = statistics.median(r[1] for r in runs) * 1e3
        same = all(r[2] == reference for r in runs)
        print(f"| {name} | {prefill:.2f} | {decode:.3f} | {1e3 / decode:.0f} | {'agree' if same else 'DIFFER'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
