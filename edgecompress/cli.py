"""The edgecompress command line: a thin skin over the library API."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgecompress import __version__
from edgecompress.errors import EdgeCompressError
from edgecompress.steps import Steps

console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

app = typer.Typer(
    name="edgecompress",
    help="Compile vision-language models with a fixed visual-token budget into static ONNX graphs and TensorRT engines.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


class RichSteps(Steps):
    """Draws each step as a spinner line that turns into a tick with its duration."""

    def __init__(self):
        super().__init__()
        self._status = None

    def started(self, key, description):
        self._description = description
        self._status = console.status(f"{description}...")
        self._status.start()

    def progress(self, phase: str, done: int, total: int) -> None:
        """Counts within the running step, on its spinner line."""
        if self._status is not None:
            self._status.update(f"{self._description}... {phase} {done}/{total}")

    def _stop(self):
        if self._status is not None:
            self._status.stop()
            self._status = None

    def finished(self, key, description, seconds):
        self._stop()
        console.print(f"[green]✓[/green] {description} [dim]({seconds:.1f}s)[/dim]")

    def failed(self, key, description):
        self._stop()
        console.print(f"[red]✗[/red] {description}")

    def note(self, message):
        console.print(f"[yellow]note:[/yellow] {message}")


def _quiet_libraries() -> None:
    """transformers' warnings and progress bars off, through the environment it reads when it is
    imported (importing it here would cost every command, a mistyped option too, three seconds)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _version(value: bool):
    if value:
        out_console.print(f"edgecompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """Compile vision-language models with a fixed visual-token budget into static ONNX graphs."""


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress export tiny-llava --budget 20%                 [dim]# embedded default, offline[/dim]\n\n"
        "  edgecompress export llava --budget 20%                      [dim]# llava-hf/llava-1.5-7b-hf (hub or cache)[/dim]\n\n"
        "  edgecompress export ./my-llava-checkpoint --budget 115      [dim]# a local llava-hf folder, K=115[/dim]\n\n"
        "  edgecompress export llava --budget 20% --random-weights     [dim]# full-size graph, no download[/dim]\n\n"
        "  edgecompress export tiny-llava --method none --precision fp32 --out out/baseline\n\n"
        "  edgecompress export tiny-llava --method fastv --layer 2 --budget 20%   [dim]# prune inside the language model[/dim]\n\n"
        "  edgecompress export tiny-llava --budget 20% --weights int4               [dim]# GPTQ, 4-bit weights[/dim]\n\n"
        "  edgecompress export tiny-qwen2.5-vl --budget 20% --image-size 672        [dim]# Qwen2.5-VL on a 672-px grid (576 tokens)[/dim]\n\n"
        "  edgecompress export llava --budget 20% --weights int4 --calibration vqa.jsonl"
    )
)
def export(
    model: str = typer.Argument(..., help="Recipe name or alias (edgecompress list models), a recipe .toml, a local llava-hf folder, or a hub id."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Visual tokens kept per image: 20%, 0.2 or a count (115). K = min(N, floor(N*rate)). Default: the recipe's (20%)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Token-selection method (edgecompress list methods). Default: hired."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32 or fp16. Default: the recipe's (fp16 for full-size models, fp32 for tiny-llava)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle folder to write. Default: out/<model>-<method>-b<budget>."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing bundle (only once the new one is complete)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Build the recipe's architecture with seeded random weights instead of loading a checkpoint (no download)."),
    vision_only: bool = typer.Option(False, "--vision-only", help="Export the vision graph only (no decoder, embeddings or tokenizer; the bundle cannot `run`)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Export for this target profile (its precision unless --precision is given), then build its engines where its TensorRT backend is installed (edgecompress list profiles)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Decoder layer a method that prunes inside the language model (fastv) prunes at, from 1. Default: the method's (fastv: 2)."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Weight format of the language model's linear layers: fp32, fp16 (= --precision), int8 or int4 (weight-only, block-wise; activations stay at --precision)."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="With --weights int8/int4: input features per quantization block (a power of two >= 16). Default: the recipe's, else 128."),
    quantization: str = typer.Option("gptq", "--quantization", help="With --weights int8/int4: gptq (calibrated) or rtn (round to nearest)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="With --quantization gptq: a JSONL data set (validate's format) whose first 32 questions calibrate. Default: generated shapes pictures."),
    decoder_ops: str = typer.Option("standard", "--decoder-ops", help="standard: one decoder graph of standard ONNX ops (TensorRT and ONNX Runtime). onnxruntime: also a decoder graph with ONNX Runtime's fused ops (GroupQueryAttention, SkipSimplifiedLayerNormalization), which the ONNX Runtime backends run (several times faster decode on the CPU); TensorRT still builds from the standard graph."),
    pixel_input: str = typer.Option("float", "--pixel-input", help="float: the vision graph takes normalised float32 pixels (NCHW). uint8: it takes the centre crop as uint8 [1, S, S, 3] and normalises inside (bit-identical; the runtime skips its own normalisation). frame:WxH (e.g. frame:1920x1080): it takes whole uint8 RGB frames of that size [1, H, W, 3] and resizes, crops and normalises inside (within 1/255 of the exact path; on a GPU backend the preprocessing runs on the device). LLaVA-1.5 only."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Qwen2.5-VL: the square (pixels, a multiple of 112) every image is resized to, which fixes N (448: 256 tokens; 672: 576). Default: the recipe's (448)."),
):
    """Export MODEL with a fixed visual-token budget into a verified bundle: the vision graph (pixels -> K image
    embeddings), the decoder graph with its KV cache, token embeddings and tokenizer."""
    from edgecompress.compiler import export_bundle

    _quiet_libraries()
    target = None
    if profile is not None:
        from edgecompress.engine.profiles import load_profile

        target = load_profile(profile)  # an unknown profile fails before the export, not after
        precision = precision or target.precision  # export for the device: its precision unless told
    bundle = export_bundle(
        model, budget=budget, method=method, precision=precision, out=out, force=force,
        random_weights=random_weights, vision_only=vision_only, layer=layer, weights=weights, group_size=group_size,
        quantization=quantization, calibration=calibration, decoder_ops=decoder_ops,
        pixel_input=pixel_input, image_size=image_size, steps=RichSteps(),
    )
    out_console.print(f"Bundle written to [bold]{bundle}[/bold]")
    if target is not None and target.builds_engines:
        from edgecompress.engine.builder import build_engines
        from edgecompress_runtime.tensorrt_backend import MODULES

        try:
            __import__(MODULES[target.backend])
        except ImportError:
            console.print(f"[yellow]Engines not built:[/yellow] {target.backend} is not installed here. "
                          f"On a machine that has it: edgecompress build {bundle} --profile {target.name}")
            return
        _report_build(build_engines(bundle, target, steps=RichSteps()), bundle, target.name)


def _report_build(record, bundle, profile_name) -> None:
    for note in record["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    out_console.print(f"Engines written to [bold]{bundle}/engines/{profile_name}[/bold] ({record['backend']} {record['builder_version']}, "
                      f"compute capability {record['compute_capability']}); memory plan {record['memory_plan']['total_gib']:.2f} "
                      f"of {record['memory_plan']['capacity_gib']:.0f} GiB")


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress build out/tiny-llava-hired-b20 --profile rtx-4090              [dim]# TensorRT for RTX; works with no GPU[/dim]\n\n"
        "  edgecompress build out/llava-1.5-7b-hired-b20 --profile jetson-orin-nx-16gb   [dim]# on the Jetson, JetPack's TensorRT[/dim]\n\n"
        "  edgecompress build out/tiny-llava-hired-b20 --profile my-board.toml --force"
    )
)
def build(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    profile: str = typer.Option(..., "--profile", help="Target profile name (edgecompress list profiles) or a path to your own .toml."),
    force: bool = typer.Option(False, "--force", "-f", help="Rebuild engines that already exist for this profile."),
    ignore_memory_plan: bool = typer.Option(False, "--ignore-memory-plan", help="Build even when the memory plan says the bundle does not fit."),
):
    """Build TensorRT engines for every graph of a bundle, for a target device profile, into BUNDLE/engines/<profile>/."""
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    target = load_profile(profile)
    record = build_engines(bundle, target, force=force, ignore_memory_plan=ignore_memory_plan, steps=RichSteps())
    _report_build(record, bundle, target.name)


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress plan llava --budget 20% --profile jetson-agx-orin-64gb\n\n"
        "  edgecompress plan llava --budget 100% --profile jetson-orin-nano-8gb --precision fp16\n\n"
        "  edgecompress plan llava --budget 20% --weights int4 --profile jetson-orin-nano-8gb   [dim]# + fp16 vs int8 vs int4[/dim]\n\n"
        "  edgecompress plan llava --budget 20% --weights int8 --group-size 64 --profile jetson-agx-orin-64gb"
    )
)
def plan(
    model: str = typer.Argument(..., help="Recipe name or alias, recipe .toml, or local llava-hf folder (its config.json is enough)."),
    profile: str = typer.Option(..., "--profile", help="Target profile name or .toml."),
    budget: str = typer.Option("20%", "--budget", "-b", help="Visual-token budget: 20%, 0.2 or a count."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Token-selection method; K is the one its export keeps (pool: its h x w grid). Default: the recipe's."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16 or fp32 (default: the profile's)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="For a method that prunes inside the language model (fastv): the decoder layer it prunes at. Default: the method's."),
    weights: Optional[str] = typer.Option(None, "--weights", help="How the language model's linear layers (q/k/v/o, gate/up/down) store their weights: fp16 or fp32 (the precision's, the default), int8 or int4 (weight-only, block-wise, symmetric; lm_head, embeddings and vision tower stay in the precision). Also prints the precision vs int8 vs int4 comparison."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="With --weights int8/int4: input features per scale, a power of two of at least 16. Default: 128."),
):
    """Show the memory plan of a model on a device at a budget, without exporting or downloading anything."""
    from edgecompress.engine.memory import (DEFAULT_GROUP_SIZE, compare_weight_formats, comparison_table, image_tokens_at,
                                            plan_memory)
    from edgecompress.engine.profiles import load_profile
    from edgecompress.recipes import resolve_model

    target = load_profile(profile)
    spec = resolve_model(model)
    if spec.recipe is not None:
        architecture = spec.recipe.config
    elif spec.kind == "folder":
        import json

        architecture = json.loads((Path(spec.location) / "config.json").read_text())
    else:
        raise EdgeCompressError(f"plan needs the architecture of {model!r}", hint="Pass a recipe name or a local folder with a config.json.")
    method = method or (spec.recipe.defaults.get("method", "hired") if spec.recipe else "hired")
    from edgecompress.architecture import Architecture
    from edgecompress.methods import get_method

    facts = Architecture.from_config(architecture)
    layer = get_method(method).resolve_layer(layer, facts.text.layers)
    pruned_at = None
    if layer is not None:
        if facts.vision_images != 1:
            raise EdgeCompressError(f"--method {method} needs a fixed number of image tokens in the prompt; "
                                    "this model's count depends on the image", hint="Use a LLaVA-1.5 model.")
        pruned_at = (layer, facts.vision.patches)
    if group_size is not None and weights is None:
        raise EdgeCompressError("--group-size applies to int8 or int4 weights", hint="Pass --weights int8 or --weights int4 with it.")
    group_size = DEFAULT_GROUP_SIZE if group_size is None else group_size
    k = image_tokens_at(architecture, budget, method)
    result = plan_memory(architecture, k, target, precision, pruned_at=pruned_at, weights=weights, group_size=group_size)
    out_console.print(result.table())
    if weights is not None:
        out_console.print("")
        out_console.print(comparison_table(compare_weight_formats(architecture, k, target, precision, pruned_at=pruned_at,
                                                                  group_size=group_size)))
    if not result.fits:
        raise typer.Exit(1)


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress run out/tiny-llava-hired-b20 --image photo.jpg --prompt \"What is in the picture?\"\n\n"
        "  edgecompress run out/tiny-llava-hired-b20 --image photo.jpg --prompt \"Describe it.\" --max-new-tokens 128\n\n"
        "  edgecompress run out/llava-1.5-7b-hired-b20 --image cat.jpg --prompt \"What is this?\" --backend onnxruntime-cuda\n\n"
        "  edgecompress run out/llava-1.5-7b-hired-b20 --image cat.jpg --prompt \"What is this?\" --backend tensorrt --profile rtx-4090"
    )
)
def run(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    image: Path = typer.Option(..., "--image", "-i", help="The image file (PNG, JPEG, ...)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="The question or instruction about the image. Repeat it for follow-up turns of one conversation: each reuses the KV cache of the turns before."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Stop after this many generated tokens (per turn)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (CPU), onnxruntime-cuda (needs onnxruntime-gpu), or tensorrt (engines from `edgecompress build`)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="With --backend tensorrt: whose engines to run (default: the only one built)."),
    stats: bool = typer.Option(False, "--stats", help="Print timings (time to first token, decode tokens/s) after the answer."),
    fast_preprocess: bool = typer.Option(False, "--fast-preprocess", help="Decode a JPEG at reduced scale and resize only the centre crop, after an integer box reduction: pixels within 4/255 of the exact CLIP preprocessing, several times less work on a large photo."),
):
    """Answer a prompt about an image with a bundle (greedy decoding), streaming the answer to stdout."""
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundle, backend=backend, profile=profile, fast_preprocess=fast_preprocess)
    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if len(prompt) == 1:
        results = [pipe.generate_full(image, prompt[0], max_new_tokens=max_new_tokens, on_text=show)]
        sys.stdout.write("\n")
    else:  # successive turns of one conversation; the answers one per line
        conversation = pipe.chat(image, prompt[0], max_new_tokens=max_new_tokens, on_text=show)
        sys.stdout.write("\n")
        for follow_up in prompt[1:]:
            conversation.follow_up(follow_up, max_new_tokens=max_new_tokens, on_text=show)
            sys.stdout.write("\n")
        results = conversation.turns
    for turn, result in enumerate(results if stats else []):
        t = result.timings
        # The first token comes from the prefill; decode speed needs at least one decode step.
        decode = (f"decode {t['decode_tokens'] / t['decode_s']:.1f} tokens/s" if t["decode_tokens"] and t["decode_s"] > 0
                  else "no decode steps to time")
        read = (f"{result.prompt_tokens} prompt tokens ({result.image_tokens} image)" if turn == 0
                else f"{result.prompt_tokens} new prompt tokens on the cached conversation")
        console.print(
            f"[dim]{read}, {len(result.token_ids)} generated "
            f"(stopped by {result.stopped_by}); time to first token {t['ttft_s'] * 1000:.0f} ms, {decode}[/dim]"
        )


@app.command(
    epilog="[b]Examples[/b]\n\n  edgecompress inspect out/tiny-llava-hired-b20\n\n  edgecompress inspect out/tiny-llava-hired-b20 --json\n\n  edgecompress inspect out/tiny-llava-hired-b20 --profile jetson-orin-nano-8gb"
)
def inspect(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    as_json: bool = typer.Option(False, "--json", help="Print the inspection as JSON."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Also show the memory plan on this target profile."),
):
    """Show what a bundle holds: model, method, budget, graphs, the verifier's verdict and op census, engines, file integrity."""
    from edgecompress.inspection import inspect_bundle, render_inspection

    result = inspect_bundle(bundle, profile)
    if as_json:
        import json

        out_console.print_json(json.dumps(result))
    else:
        render_inspection(result, out_console)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress bench out/tiny-llava-hired-b20                                   [dim]# ONNX Runtime, CPU[/dim]\n\n"
        "  edgecompress bench out/tiny-llava-none out/tiny-llava-hired-b50 out/tiny-llava-hired-b20 --runs 20\n\n"
        "  edgecompress bench out/llava-hired-b20 --backend tensorrt --profile jetson-orin-nano-8gb   [dim]# + tegrastats power[/dim]\n\n"
        "  edgecompress bench out/tiny-llava-hired-b20 --prompt-tokens 128 --new-tokens 64 --image-size 1920x1080"
    )
)
def bench(
    bundles: list[Path] = typer.Argument(..., help="One or more bundle folders; several are timed one after the other in this run and compared in one table."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (CPU), onnxruntime-cuda (needs onnxruntime-gpu), or tensorrt (engines from `edgecompress build`)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile: the predicted column (its peak TFLOP/s and bandwidth) and, with --backend tensorrt, whose engines to run."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed runs first (sessions allocate, kernels are chosen)."),
    runs: int = typer.Option(10, "--runs", "-r", help="Timed runs per bundle."),
    prompt_tokens: int = typer.Option(32, "--prompt-tokens", help="Text tokens of the prompt (chat template included), besides the image's."),
    new_tokens: int = typer.Option(32, "--new-tokens", "-n", help="Tokens generated per run (end-of-sequence ignored, so every run decodes as many)."),
    image_size: str = typer.Option("640x480", "--image-size", help="Width x height of the seeded test image."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the test image."),
    threads: int = typer.Option(0, "--threads", help="ONNX Runtime intra-op threads (0: its default, one per core)."),
    tegrastats: str = typer.Option("auto", "--tegrastats", help="Power through tegrastats: auto (where it is on PATH, i.e. a Jetson), on (required), off."),
    interval: int = typer.Option(100, "--interval", help="tegrastats sampling interval, ms."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="With several bundles: folder for the side-by-side table, JSON and PNG. Default: out/bench."),
    as_json: bool = typer.Option(False, "--json", help="Print the report(s) as JSON instead of tables."),
    fast_preprocess: bool = typer.Option(False, "--fast-preprocess", help="Time the reduced-work image path (within 4/255 of the exact one; see `run --help`)."),
):
    """Time a bundle stage by stage (preprocess, vision, prefill, TTFT, decode per token, end to end) with p50/p90,
    memory, predicted limits from the profile and, on a Jetson, power. Writes BUNDLE/reports/bench-<time>.json and .md."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from edgecompress.bench.runner import BenchSettings, bench_bundle
    from edgecompress_runtime.bundle import read_manifest

    try:
        width, height = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise EdgeCompressError(f"--image-size must be WIDTHxHEIGHT, e.g. 640x480, got {image_size!r}") from None
    settings = BenchSettings(backend=backend, profile=profile, warmup=warmup, runs=runs, prompt_tokens=prompt_tokens,
                             new_tokens=new_tokens, width=width, height=height, seed=seed, threads=threads,
                             tegrastats=tegrastats, interval_ms=interval, fast_preprocess=fast_preprocess)
    settings.check()
    if profile is not None:
        from edgecompress.engine.profiles import load_profile

        load_profile(profile)  # an unknown profile fails before any bundle loads
    for bundle in bundles:  # a mistyped fourth bundle fails now, not after three have run
        read_manifest(bundle)
    reports = []
    interrupted = False
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        for bundle in bundles:
            task = progress.add_task(f"{bundle.name}: loading", total=None)

            def update(phase, done, total, task=task, name=bundle.name):
                progress.update(task, description=f"{name}: {'warm-up' if phase == 'warmup' else 'timed runs'}",
                                completed=done, total=total)

            try:
                report, path = bench_bundle(bundle, settings, on_progress=update)
            except KeyboardInterrupt:  # before any timed run of this bundle: keep the bundles already done
                interrupted = True
                break
            progress.remove_task(task)
            reports.append(report)
            if not as_json:
                console.print(f"[green]✓[/green] {bundle.name}: report written to [bold]{path}[/bold]", soft_wrap=True)
            if report["interrupted"]:
                interrupted = True
                break
    if as_json and reports:
        out_console.print_json(json.dumps(reports[0] if len(reports) == 1 else reports))
    else:
        from edgecompress.bench.report import markdown

        for report in reports:
            out_console.print(markdown(report) + "\n", soft_wrap=True)
    if len(reports) > 1:
        from edgecompress.bench.report import side_by_side, write_comparison

        paths = write_comparison(out or Path("out/bench"), reports)
        if not as_json:
            out_console.print(side_by_side(reports), soft_wrap=True)
            console.print("Comparison written to " + ", ".join(f"[bold]{p}[/bold]" for p in paths), soft_wrap=True)
    if interrupted:
        _interrupted_kept()  # exit 130, after writing what was measured


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress sweep tiny-llava --budgets 100%,50%,20%,10% --dataset out/data-shapes/test.jsonl --max-accuracy-drop 2%\n\n"
        "  edgecompress sweep llava --budgets 100%,30%,20%,10% --dataset vqa.jsonl --limit 200 --backend tensorrt --profile rtx-4090\n\n"
        "  edgecompress sweep tiny-llava --method vtc-cls --budgets 100%,20%,10% --dataset out/data-shapes/test.jsonl --bundles out/sweep-vtc"
    )
)
def sweep(
    model: str = typer.Argument(..., help="Recipe name or alias, recipe .toml, or a local llava-hf folder."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help='JSONL, one {"image", "question", "answer", "type"} object a line.'),
    budgets: str = typer.Option("100%,50%,20%,10%", "--budgets", help="Comma-separated budgets; 100% is the unpruned bundle (method none)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Token-selection method. Default: the recipe's (hired)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32 or fp16. Default: the recipe's."),
    max_accuracy_drop: Optional[str] = typer.Option(None, "--max-accuracy-drop", help="Name the smallest budget whose accuracy is within this many points of the unpruned model's (2% = 2 points, absolute)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    bundles: Path = typer.Option(Path("out"), "--bundles", help="Folder of the bundles: one already at a budget's default name (same method, budget and precision) is reused, the others exported."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for sweep.json, sweep.md and sweep.png. Default: <bundles>/sweep-<model>-<method>."),
    backend: str = typer.Option("onnxruntime", "--backend", help="How the bundles run (validate and bench): onnxruntime, onnxruntime-cuda or tensorrt."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile: predicted limits, and with --backend tensorrt whose engines run."),
    runs: int = typer.Option(5, "--runs", "-r", help="Timed bench runs per budget."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed bench runs per budget."),
    new_tokens: int = typer.Option(16, "--new-tokens", "-n", help="Tokens generated per bench run."),
):
    """Export, validate and bench MODEL at several budgets: accuracy against K and TTFT, the Pareto front, and the
    smallest budget within --max-accuracy-drop of the unpruned accuracy."""
    from edgecompress.bench.runner import BenchSettings
    from edgecompress.bench.sweep import markdown, parse_drop, run_sweep

    _quiet_libraries()
    drop = parse_drop(max_accuracy_drop) if max_accuracy_drop is not None else None
    points = [b.strip() for b in budgets.split(",") if b.strip()]
    if not points:
        raise EdgeCompressError("--budgets is empty", hint="Give budgets such as --budgets 100%,20%,10%.")
    settings = BenchSettings(backend=backend, profile=profile, runs=runs, warmup=warmup, new_tokens=new_tokens,
                             tegrastats="off")
    steps = RichSteps()
    result = run_sweep(model, points, dataset, method=method, precision=precision, limit=limit, bundles=bundles,
                       out=out, settings=settings, max_drop=drop, steps=steps, on_progress=steps.progress)
    out_console.print(markdown(result), soft_wrap=True)
    console.print("Written: " + ", ".join(f"[bold]{f}[/bold]" for f in result["files"]), soft_wrap=True)
    if drop is not None and result["pick"] is None:
        raise typer.Exit(1)


dataset_app = typer.Typer(help="Generate visual-QA data sets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command(
    "shapes",
    epilog="[b]Examples[/b]\n\n  edgecompress dataset shapes --out data/ --count 500 --seed 1\n\n"
           "  edgecompress dataset shapes --out data-wide/ --count 200 --width 672 --height 336",
)
def dataset_shapes(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write images/, train.jsonl and test.jsonl into."),
    count: int = typer.Option(500, "--count", "-n", help="Number of images (one question each)."),
    seed: int = typer.Option(1, "--seed", help="Random seed: the same seed writes the same data set."),
    width: int = typer.Option(336, "--width", help="Image width in pixels."),
    height: int = typer.Option(336, "--height", help="Image height in pixels."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of the images in test.jsonl."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing data set."),
):
    """Coloured shapes on textured backgrounds with one-word questions on colour, shape, count, position and presence."""
    from edgecompress.data.shapes import generate_shapes

    with console.status(f"Drawing {count} images..."):
        splits = generate_shapes(out, count=count, seed=seed, size=(width, height), test_fraction=test_fraction, force=force)
    out_console.print(f"Data set written to [bold]{out}[/bold]: " + ", ".join(str(p) for p in splits.values()))


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress validate out/tiny-llava-hired-b20 --dataset data/test.jsonl\n\n"
        "  edgecompress validate out/tiny-llava-hired-b20 --dataset data/test.jsonl --limit 50\n\n"
        "  edgecompress validate out/llava-1.5-7b-hired-b20 --dataset my-vqa.jsonl --backend tensorrt --profile rtx-4090"
    )
)
def validate(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    dataset: Path = typer.Option(..., "--dataset", "-d", help='JSONL, one {"image", "question", "answer", "type"} object a line (image paths relative to the file).'),
    backend: str = typer.Option("onnxruntime", "--backend", help="How the bundle runs: onnxruntime, onnxruntime-cuda or tensorrt."),
    profile: Optional[str] = typer.Option(None, "--profile", help="With --backend tensorrt: whose engines to run."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", min=1, help="Answer length limit (answers are one word)."),
):
    """Exact-match accuracy of the bundle, the pruned PyTorch pipeline and the unpruned model, per question type."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from edgecompress.validate import validate_bundle

    _quiet_libraries()
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("Validating", total=None)
        summary, report = validate_bundle(
            bundle, dataset, backend=backend, profile=profile, limit=limit, max_new_tokens=max_new_tokens,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out_console.print(report.with_suffix(".md").read_text(encoding="utf-8"))
    out_console.print(f"Report written to [bold]{report}[/bold]")


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress compare out/tiny-llava-fp32 out/tiny-llava-fp16                 [dim]# fp16 against fp32, ONNX Runtime CPU[/dim]\n\n"
        "  edgecompress compare out/llava-1.5-7b-hired-b20 --backends onnxruntime,onnxruntime-cuda\n\n"
        "  edgecompress compare out/llava-1.5-7b-hired-b20 --backends onnxruntime-cuda,tensorrt --profile rtx-4090\n\n"
        "  edgecompress compare out/a out/b --image cat.jpg --image dog.jpg --prompt \"What is this?\" --new-tokens 32"
    )
)
def compare(
    bundles: list[Path] = typer.Argument(..., help="Bundles of the same model, method and K (precisions may differ); the first is the reference."),
    backends: str = typer.Option("onnxruntime", "--backends", help="Comma-separated backends each bundle runs on: onnxruntime (CPU), onnxruntime-cuda, tensorrt."),
    images: Optional[int] = typer.Option(None, "--images", min=0, help="Generated shapes pictures to compare on (seeded). Default: 3, or none when --image is given."),
    image: Optional[list[Path]] = typer.Option(None, "--image", "-i", help="An image file to compare on (repeatable)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated pictures: the same seed, the same pictures."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The question asked about every image. Default: one about the generated pictures' shapes."),
    new_tokens: int = typer.Option(16, "--new-tokens", "-n", min=1, help="Greedy tokens generated and compared per image."),
    rtol: Optional[float] = typer.Option(None, "--rtol", min=0, help="Override the bound on relative error (max|a-b| / max|reference|) of image_embeds and logits. Default: by the less precise side of each pair (the table and report show it)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="With --backends tensorrt: whose engines to run."),
    margins: bool = typer.Option(True, "--margins/--no-margins", help="Load the reference bundle's checkpoint in PyTorch for the selection scores (margin at the cut-off, tie band)."),
):
    """Run the same images through every (bundle, backend) pair and compare each with the first: image embeddings,
    prefill logits, kept tokens (tie band), greedy tokens. Exit 1 when a pair is outside its tolerance."""
    from edgecompress.bench.compare import DEFAULT_PROMPT, compare_bundles, render

    _quiet_libraries()
    names = [name.strip() for name in backends.split(",") if name.strip()]
    report, path = compare_bundles(
        bundles, names, image_paths=image or [], generated=images if images is not None else (0 if image else 3),
        seed=seed, prompt=DEFAULT_PROMPT if prompt is None else prompt, new_tokens=new_tokens, relative=rtol, profile=profile, margins=margins, steps=RichSteps(),
    )
    table, lines = render(report)
    out_console.print(table)
    for line in lines:
        out_console.print(line)
    verdict = "[green]all pairs within tolerance[/green]" if report["passed"] else "[red]outside tolerance[/red]"
    out_console.print(f"{verdict}; report written to [bold]{path}[/bold]")
    if not report["passed"]:
        raise typer.Exit(1)


class ListWhat(str, Enum):
    models = "models"
    methods = "methods"
    profiles = "profiles"


@app.command(name="list", epilog="[b]Examples[/b]\n\n  edgecompress list models\n\n  edgecompress list methods\n\n  edgecompress list profiles")
def list_(what: ListWhat = typer.Argument(..., help="What to list: models, methods or profiles.")):
    """List the built-in model recipes, token-selection methods, or target device profiles."""
    table = Table(show_edge=False, pad_edge=False)
    if what is ListWhat.models:
        from edgecompress.recipes import builtin_recipes

        for col in ("recipe", "aliases", "source", "defaults", "description"):
            table.add_column(col)
        for r in builtin_recipes().values():
            d = r.defaults
            table.add_row(r.name, ", ".join(r.aliases), r.source, f"{d.get('method')} {d.get('budget')} {d.get('precision')}", r.description)
    elif what is ListWhat.profiles:
        from edgecompress.engine.profiles import builtin_profiles

        numbers = ("fp16 TFLOP/s", "GB/s")  # bench's prediction inputs; "-" where the profile has none
        for col in ("profile", "backend", "SM", "memory", "precision", *numbers, "prompt/output tokens", "description"):
            table.add_column(col, justify="right" if col in numbers else "left")
        for p in builtin_profiles().values():
            memory = f"{p.memory_gib:g} GiB" + (" shared" if p.shared_memory else "")
            tflops = "-" if p.peak_fp16_tflops is None else f"{p.peak_fp16_tflops:g}"
            bandwidth = "-" if p.memory_bandwidth_gbs is None else f"{p.memory_bandwidth_gbs:g}"
            table.add_row(p.name, p.backend, p.compute_capability or "-", memory, p.precision, tflops, bandwidth,
                          f"{p.max_prompt_tokens}/{p.max_output_tokens}", p.description)
    else:
        from edgecompress.methods import methods

        for col in ("method", "stage", "needs", "what it keeps", "paper"):
            table.add_column(col)
        for m in methods().values():
            stage = ("inside the vision tower" if m.stage == "tower"
                     else f"decoder, at layer {m.default_layer} (--layer)" if m.stage == "decoder"
                     else f"{m.stage}, {'after' if m.after_projector else 'before'} the projector")
            table.add_row(m.name, stage, ", ".join(m.needs), m.summary, m.paper)
        table.caption = "A tower method combines with a vision method: --method tome+hired (tome+visionzip, ...)"
    out_console.print(table)


def _usage_errors() -> tuple[type, ...]:
    """The usage-error types of every click in use: typer 0.29 raises its vendored copy's
    (``typer._click``), click's own is caught too should anything raise it."""
    import importlib

    types = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(importlib.import_module(module).ClickException)
        except ImportError:
            continue
    return tuple(types)


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C (past every ``except Exception``) so that every staging folder is
    removed on the way out. Not a KeyboardInterrupt: typer would report it as Ctrl-C."""


_interrupts: list[int] = []  # the signals that interrupted this run (typer turns them into exit code 130)


def _on_signal(signum, frame):
    import signal

    _interrupts.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _interrupted_kept() -> None:
    console.print("[yellow]interrupted[/yellow]: the runs completed before Ctrl-C are reported above")
    sys.exit(130)


def _interrupted() -> None:
    """Every writer has removed its staging folder by the time the interrupt reaches here."""
    import signal

    if signal.SIGTERM in _interrupts:
        console.print("[yellow]terminated[/yellow]: nothing half-written is left behind")
        sys.exit(128 + signal.SIGTERM)
    console.print("[yellow]interrupted[/yellow]: nothing half-written is left behind")
    sys.exit(130)


def main() -> None:
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):  # never one the caller ignores
            signal.signal(signum, _on_signal)
    usage_errors = _usage_errors()
    try:
        code = app(standalone_mode=False, prog_name="edgecompress")  # returns typer.Exit's code instead of raising
    except EdgeCompressError as err:
        console.print(f"[bold red]error:[/bold red] {err}")
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, Terminated):  # SIGTERM, or Ctrl-C outside click's own handling
        _interrupted()
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        sys.exit(1)
    except usage_errors as err:  # usage errors: click's own message (usage line, what is wrong), exit 2
        err.show()
        sys.exit(err.exit_code)
    if _interrupts:  # typer caught the interrupt and returned 130
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
