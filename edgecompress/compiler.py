"""The export pipeline: MODEL + budget + method -> a verified bundle on disk.

Each step is a small named function; :func:`export_bundle` composes them and reports
progress through a :class:`~edgecompress.steps.Steps` object.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
from pathlib import Path
from typing import Any

from edgecompress import __version__
from edgecompress.budget import parse_budget
from edgecompress.bundle import SCHEMA_VERSION, BundleWriter, check_destination
from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import PRECISION_DTYPES, VisionPlan, torch_dtype
from edgecompress.methods import get_method
from edgecompress.recipes import ModelSpec, resolve_model
from edgecompress.steps import Steps

DEFAULT_OUT_ROOT = Path("out")


def tool_versions() -> dict[str, str]:
    versions = {"edgecompress": __version__}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def default_bundle_name(model_name: str, method: str, budget_spec: str, layer: int | None = None) -> str:
    """out/<model>-<method>[-l<layer>]-b<percent> (or -k<count>); the layer only when --layer is given,
    so bundles pruned at different decoder layers do not overwrite one another."""
    if method == "none":
        return f"{model_name}-none"
    if layer is not None:
        method = f"{method}-l{layer}"
    kind, value = parse_budget(budget_spec)
    if kind == "count":
        return f"{model_name}-{method}-k{value}"
    percent = value * 100
    label = f"{float(percent):g}".replace(".", "p")
    return f"{model_name}-{method}-b{label}"


def resolve_options(spec: ModelSpec, method: str | None, budget: str | None, precision: str | None,
                    layer: int | None = None):
    defaults = spec.recipe.defaults if spec.recipe else {}
    for option, value in (("--method", method), ("--budget", budget), ("--precision", precision)):
        if value is not None and not str(value).strip():
            raise EdgeCompressError(f"{option} is empty", hint=f"Leave {option} out for the recipe's default, or give a value.")
    method = method or defaults.get("method", "hired")
    # fail fast on an unknown method, or a --layer it cannot take, before loading anything
    get_method(method).resolve_layer(layer, _language_model_layers(spec))
    if method == "none":
        if budget not in (None, "100%", "1.0", "1"):
            raise EdgeCompressError(
                f"--method none keeps every token; it takes no --budget (got {budget!r})",
                hint="Drop --budget, or choose a pruning method such as --method hired.",
            )
        budget = "100%"
    budget = str(budget or defaults.get("budget", "20%"))
    parse_budget(budget)  # syntax errors before loading; range errors need N
    precision = precision or defaults.get("precision", "fp16")
    if precision not in PRECISION_DTYPES:
        raise EdgeCompressError(f"unknown precision {precision!r}", hint="Use fp32 or fp16.")
    return method, budget, precision


def _language_model_layers(spec: ModelSpec) -> int | None:
    """The language model's layer count from the recipe's architecture, where it has one."""
    if spec.recipe is None or not spec.recipe.config:
        return None
    from edgecompress.architecture import Architecture

    return Architecture.from_config(spec.recipe.config).text.layers


def export_bundle(
    model: str,
    *,
    budget: str | None = None,
    method: str | None = None,
    precision: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    random_weights: bool = False,
    vision_only: bool = False,
    layer: int | None = None,
    weights: str | None = None,
    group_size: int | None = None,
    quantization: str = "gptq",
    calibration: str | Path | None = None,
    decoder_ops: str = "standard",
    pixel_input: str = "float",
    image_size: int | None = None,
    steps: Steps | None = None,
) -> Path:
    """Export MODEL with a fixed visual-token budget into a verified bundle folder.

    The bundle holds the vision graph (pixels -> K image embeddings) and, unless
    ``vision_only``, the decoder graph (embeddings + KV cache -> logits + KV cache), the
    token-embedding table and the tokenizer: everything ``edgecompress_runtime`` needs.

    A decoder-stage method (FastV, at decoder ``layer``) leaves the vision graph unpruned and
    prunes in a ``prefill`` graph instead; ``decoder`` then serves the decode steps.

    ``weights`` int8 or int4: the decoder's linear layers quantized (``edgecompress.quantize``),
    blocks of ``group_size`` input features, by ``quantization`` (gptq, calibrated on
    ``calibration``, a JSONL data set, or generated shapes pictures; or rtn).

    ``decoder_ops`` onnxruntime: also a decoder graph with ONNX Runtime's fused operators
    (``edgecompress.lowering.fuse``), which the ONNX Runtime backends run in place of the standard
    one; TensorRT still builds from the standard graph.

    ``pixel_input`` uint8: the vision graph takes the centre crop as uint8 HWC (``pixels``) and
    normalises inside (``edgecompress.models.pixel_input``); ``frame:WxH``: it takes whole uint8
    frames of that size (``frame``) and resizes, crops and normalises inside. LLaVA-1.5 only.

    ``image_size`` (Qwen2.5-VL): the square every image is resized to, in place of the recipe's;
    it fixes the patch grid, N and so K.
    """
    steps = steps or Steps()
    spec = resolve_model(model)
    if weights in ("fp16", "fp32"):  # a float weight format is the precision
        if precision is not None and precision != weights:
            raise EdgeCompressError(f"--weights {weights} with --precision {precision}: float weights are the precision",
                                    hint="Give one of them, or --weights int8/int4 for quantized weights.")
        precision, weights = weights, None
    method, budget, precision = resolve_options(spec, method, budget, precision, layer)
    chosen = get_method(method)
    if vision_only and chosen.stage == "decoder":
        raise EdgeCompressError(f"--vision-only with --method {method}: it prunes inside the language model, "
                                "so its vision graph alone keeps every token",
                                hint="Drop --vision-only, or use --method none for the unpruned vision graph.")
    quant = resolve_weights(spec, weights, group_size, quantization, calibration, chosen, vision_only)
    family = spec.recipe.family if spec.recipe else None
    check_decoder_ops(decoder_ops, chosen, vision_only, family)
    _, frame = check_pixel_input(pixel_input, family)
    check_image_size(image_size, family)
    if family == "qwen2.5-vl" and chosen.stage != "vision":
        raise EdgeCompressError(f"method {method!r} is not available for Qwen2.5-VL: it acts at the {chosen.stage} stage, "
                                "which this family does not lower yet", hint="Use dart, received, divprune or random.")
    name = default_bundle_name(spec.name, method, budget, layer) + (f"-{quant.format}" if quant else "")
    name += f"-s{image_size}" if image_size else ""
    name += f"-frame{frame[0]}x{frame[1]}" if frame else ""
    out = Path(out) if out else DEFAULT_OUT_ROOT / name
    check_destination(out, force)
    # torch, transformers and onnx load only now: a mistyped option is refused in a second
    from edgecompress.graph.cache import cache_folder, graph_key, keep_graph, reuse_graph
    from edgecompress.graph.export import export_onnx
    from edgecompress.models.loading import load_model

    dtype = torch_dtype(precision)
    dropped = [f"{name}/" for name in ("reports", "engines") if (out / name).is_dir()]
    if dropped:
        steps.note(f"--force replaces {out} once the new bundle is complete; its {' and '.join(dropped)} "
                   "belong to the old graphs and will not be kept")

    with steps.step("load", f"Loading {spec.name}" + (" (random weights)" if random_weights else "")):
        adapter = load_model(spec, dtype=dtype, random_weights=random_weights, vision_only=vision_only,
                             image_size=image_size)
    check_image_size(image_size, adapter.family)  # a checkpoint folder's family is known only now
    if chosen.stage == "decoder":
        plan = decoder_stage_plan(adapter, chosen, budget, layer, precision)
    else:
        plan = adapter.plan_vision(chosen, budget, precision)
    k, resolved = plan.k, plan.budget
    exported = plan  # what the vision graph is exported from; quantization calibrates with the float plan
    check_decoder_ops(decoder_ops, chosen, vision_only, adapter.family)  # a checkpoint folder's family is known only now
    if quant is not None and adapter.family == "qwen2.5-vl":
        resolve_weights(spec, weights, group_size, quantization, calibration, chosen, vision_only, adapter.family)
    pixels, frame = check_pixel_input(pixel_input, adapter.family)
    if pixels == "uint8":
        from edgecompress.models.pixel_input import uint8_vision_plan

        exported = uint8_vision_plan(plan, adapter.preprocess)
    elif pixels == "frame":
        from edgecompress.models.pixel_input import frame_vision_plan

        exported = frame_vision_plan(plan, adapter.preprocess, *frame)
    pruning = plan.extra.get("decoder_pruning")  # what the prefill graph bakes in, for a decoder-stage method

    graphs: dict[str, Any] = {}
    with BundleWriter(out, force=force) as writer:
        shown = f"all {resolved.n} tokens; {method} keeps {k} at decoder layer {pruning['layer']}" if pruning else f"K={k} of {resolved.n}"
        with steps.step("export", f"Exporting vision graph ({shown}, {precision})"):
            files = export_onnx(exported.module, exported.example, exported.spec, writer.staging / "vision.onnx")
        with steps.step("verify", "Verifying vision graph (static shapes, constant-K TopK, TensorRT ops)"):
            graphs["vision"] = verified_entry(writer.staging, files, exported.spec)
        text: dict[str, Any] = {}
        if pruning is not None:
            prefill, decoder = adapter.plan_pruned_decoder(chosen, pruning["layer"], pruning["image_start"],
                                                           pruning["image_tokens"], k, precision)
            with steps.step("export-prefill", f"Exporting prefill graph ({method} at layer {pruning['layer']}, {precision})"):
                files = export_onnx(prefill.module, prefill.example, prefill.spec, writer.staging / "prefill.onnx",
                                    dynamic_shapes=prefill.dynamic_shapes)
            with steps.step("verify-prefill", "Verifying prefill graph"):
                graphs["prefill"] = verified_entry(writer.staging, files, prefill.spec)
        if not vision_only:
            decoder = decoder if pruning is not None else adapter.plan_decoder(precision)
            layers = decoder.facts["num_layers"]
            # the same language model exports the same graph whatever the budget (not a pruning decoder's)
            key = graph_key(decoder.module, decoder.facts, precision, decoder.spec) if pruning is None else None
            files = reuse_graph(key, writer.staging) if key else None
            if files is not None:
                with steps.step("export-decoder", f"Exporting decoder graph ({layers} layers, KV cache, {precision}): "
                                f"reused from the graph cache ({cache_folder()}), the same weights and code exported it before"):
                    pass
            else:
                with steps.step("export-decoder", f"Exporting decoder graph ({layers} layers, KV cache, {precision})"):
                    files = export_onnx(decoder.module, decoder.example, decoder.spec, writer.staging / "decoder.onnx",
                                        dynamic_shapes=decoder.dynamic_shapes)
                if key:
                    keep_graph(key, writer.staging, files)
            with steps.step("verify-decoder", "Verifying decoder graph"):
                graphs["decoder"] = verified_entry(writer.staging, files, decoder.spec)
            with steps.step("assets", "Writing token embeddings and tokenizer"):
                text = write_text_assets(adapter, writer.staging, k, dtype, pruning)
            if quant is not None:
                record = quantize_decoder(adapter, plan, quant, calibration, writer.staging, steps)
                with steps.step("verify-quantized", "Verifying the quantized decoder graph"):
                    graphs["decoder"] = verified_entry(writer.staging, record.pop("files"), decoder.spec)
            if decoder_ops == "onnxruntime":
                with steps.step("fuse-decoder", "Writing the ONNX Runtime decoder graph (fused operators)"):
                    runtime_graphs = {"decoder": onnxruntime_decoder_entry(
                        writer.staging, graphs["decoder"], layers, text["limits"]["max_sequence"],
                        quant.format if quant else None)}
        adapter.write_assets(plan, writer.staging, precision)
        with steps.step("write", f"Writing bundle {out}"):
            writer.manifest = build_manifest(spec, adapter, plan, precision, graphs, text, random_weights)
            writer.manifest["preprocess"]["pixel_input"] = pixels
            if frame is not None:
                writer.manifest["preprocess"]["frame_size"] = list(frame)  # [width, height]
            if quant is not None:
                writer.manifest["weights"] = record
            if decoder_ops == "onnxruntime" and not vision_only:
                writer.manifest["onnxruntime_graphs"] = runtime_graphs
            if image_size is not None:  # the recipe record keeps the recipe's own size; this export's is here
                writer.manifest["recipe"]["overrides"] = {"image_size": image_size}
    return out


CALIBRATION_PROMPTS = 32  # GPTQ's statistics: 32 prompts of a few hundred tokens for a 128-wide block
LOGIT_CHECK_PROMPTS = 4
# Least cosine between the quantized and the float decoder's next-token logits on the check
# prompts: a guard against gross failure, not a precision test. Measured on tiny-llava at 20%
# (hidden size 128): int8 GPTQ 1 - 8e-7; int4 RTN (group 32) 1 - 4.2e-5, GPTQ 1 - 1.1e-5, GPTQ
# group 128 1 - 1.0e-5; on tiny-llava-random (64 wide, untrained: no structure for int4 to keep)
# int4 RTN group 32 0.987. Deliberately broken int4 graphs of tiny-llava: nibbles swapped -0.95,
# every scale doubled 0.994, the blocks' scales in reverse order 0.998 -- so a bound loose enough
# for every model catches the first only; the exact ONNX Runtime round trip of codes and scales
# (tests/test_quant.py) is what holds the layout.
LOGIT_COSINE = {"int8": 0.999, "int4": 0.98}


def resolve_weights(spec: ModelSpec, weights: str | None, group_size: int | None, algorithm: str,
                    calibration, method, vision_only: bool, family: str | None = None):
    """The quantized weight format asked for, checked before anything loads; None for float weights."""
    from edgecompress.engine.memory import WEIGHT_FORMATS as FORMATS
    from edgecompress.quantize import Quantization

    if weights is None:
        if group_size is not None or calibration is not None:
            raise EdgeCompressError("--group-size and --calibration apply to --weights int8 or int4")
        return None
    if weights not in FORMATS:
        raise EdgeCompressError(f"unknown weight format --weights {weights!r}", hint=f"Use one of {', '.join(FORMATS)}.")
    defaults = spec.recipe.defaults if spec.recipe else {}
    fmt = Quantization(weights, group_size if group_size is not None else int(defaults.get("group_size", 128)), algorithm)
    fmt.check()
    if vision_only:
        raise EdgeCompressError(f"--weights {weights} quantizes the language model; --vision-only exports none")
    if spec.recipe is not None and spec.recipe.family == "llava-next":
        raise EdgeCompressError(f"--weights {weights} on LLaVA-NeXT is not supported yet (its calibration would need "
                                "the runtime's anyres packing)", hint="Quantize a LLaVA-1.5 model, or use float weights.")
    if (family or (spec.recipe.family if spec.recipe else None)) == "qwen2.5-vl":
        raise EdgeCompressError(f"--weights {weights} on Qwen2.5-VL is not supported yet (its calibration would need "
                                "the mRoPE positions)", hint="Export it with float weights; `plan --weights int4` "
                                "still sizes an int4 model for a device.")
    if method.stage == "decoder":
        raise EdgeCompressError(f"--weights {weights} with --method {method.name}: quantizing the prefill graph of a "
                                "method that prunes inside the language model is not supported yet",
                                hint="Use a vision-stage method (hired, ...), or float weights.")
    if calibration is not None and fmt.algorithm == "gptq":
        from edgecompress.validate import load_dataset

        load_dataset(calibration)  # a bad data set fails now, not after the export
    return fmt


def calibration_samples(calibration, count: int) -> list[tuple[Any, str, str]]:
    """(image, question, answer) for calibration: the user's data set, or generated shapes pictures."""
    import tempfile

    from PIL import Image

    from edgecompress.validate import load_dataset

    def read(path) -> list[tuple[Any, str, str]]:
        return [(Image.open(s.image).convert("RGB"), s.question, s.answer) for s in load_dataset(path, count)]

    if calibration is not None:
        return read(calibration)
    from edgecompress.data.shapes import generate_shapes

    with tempfile.TemporaryDirectory(prefix="edgecompress-calibration-") as tmp:
        return read(generate_shapes(Path(tmp) / "data", count=count, seed=0, test_fraction=0.0)["train"])


def quantize_decoder(adapter, plan, quant, calibration, staging: Path, steps: Steps) -> dict[str, Any]:
    """Quantize staging/decoder.onnx in place; check its next-token logits against the float graph's."""
    from edgecompress.quantize import calibrate, cosine, prefill_logits, quantize_graph

    if plan.extra.get("anyres") is not None:  # a local LLaVA-NeXT folder (a recipe is refused before loading)
        raise EdgeCompressError("--weights int8/int4 on LLaVA-NeXT is not supported yet (its calibration would need "
                                "the runtime's anyres packing)", hint="Quantize a LLaVA-1.5 model, or use float weights.")
    source = str(calibration) if calibration is not None else "generated shapes pictures (seed 0)"
    samples = calibration_samples(calibration, CALIBRATION_PROMPTS)
    with steps.step("calibrate", f"Calibrating on {len(samples)} prompts ({source})"):
        hessians, tokens, prompts = calibrate(adapter, plan.module, samples, hessians=quant.algorithm == "gptq")
    check = prompts[:LOGIT_CHECK_PROMPTS]
    reference = prefill_logits(staging / "decoder.onnx", check)  # the float graph, before it is rewritten
    with steps.step("quantize", f"Quantizing the language model's linear layers ({quant.label()})"):
        record = quantize_graph(staging / "decoder.onnx", quant, hessians)
    with steps.step("logit-check", f"Checking next-token logits against the float graph on {len(check)} prompts"):
        cosines = [cosine(a, b) for a, b in zip(reference, prefill_logits(staging / "decoder.onnx", check, quant.format))]
        least = min(cosines)
        if least < LOGIT_COSINE[quant.format]:
            raise EdgeCompressError(
                f"the {quant.format} decoder's next-token logits have cosine {least:.4f} with the float graph's "
                f"(at least {LOGIT_COSINE[quant.format]} expected): quantization lost too much",
                hint="Use a smaller --group-size, --quantization gptq with a --calibration set from your data, or int8.")
    record["calibration"] = {"source": source, "prompts": len(samples), "tokens": tokens} if hessians is not None else None
    record["logit_check"] = {"prompts": len(check), "cosine_min": least, "threshold": LOGIT_COSINE[quant.format]}
    return record


def decoder_stage_plan(adapter, method, budget: str, layer: int | None, precision: str) -> VisionPlan:
    """For a method that prunes inside the language model: the unpruned vision graph's plan (as
    method ``none`` exports it), recorded as ``method`` with K = the budget's share of N, and in
    ``extra["decoder_pruning"]`` (a manifest entry) what the prefill graph bakes in: the layer,
    the image's place in the prompt, N and K."""
    import dataclasses

    from edgecompress.budget import resolve_for

    if hasattr(adapter, "check_method"):  # a family that does not lower this stage says so before any export
        adapter.check_method(method)
    layer = method.resolve_layer(layer, adapter.language_model_facts()["num_layers"])
    plan = adapter.plan_vision(get_method("none"), "100%", precision)
    if plan.extra.get("anyres") is not None or plan.budget.n != plan.k:
        raise EdgeCompressError(f"--method {method.name} needs a fixed number of image tokens in the prompt; "
                                f"this {adapter.family} model's count depends on the image",
                                hint="Use a LLaVA-1.5 model, or a vision-stage method such as hired.")
    n = plan.k
    resolution = resolve_for(budget, method, adapter.architecture())
    k = resolution.k
    start = image_start(adapter)
    pruning = {"method": method.name, "layer": layer, "image_start": start, "image_tokens": n, "kept_image_tokens": k}
    details = {"summary": method.summary, **method.details(resolution.budget.k, k, adapter.grid), "layer": layer,
               "image_start": start}
    return dataclasses.replace(plan, budget=resolution.budget, k=k, method=method, details=details,
                               token_order=method.token_order, extra={**plan.extra, "decoder_pruning": pruning})


def image_start(adapter) -> int:
    """The number of prompt tokens before the image, which the bundle's chat template fixes: the
    runtime formats every prompt from that template and refuses one whose image lies elsewhere."""
    if adapter.text_source is None:
        raise EdgeCompressError("a decoder-stage method needs the checkpoint's tokenizer to place the image in the prompt",
                                hint="Export from a checkpoint that has a tokenizer (a built-in recipe such as tiny-llava).")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter.text_source)
    ids = tokenizer(adapter.chat_prompt_template().replace("{prompt}", "What is in the picture?"))["input_ids"]
    if ids.count(adapter.image_token_id) != 1:
        raise EdgeCompressError(f"the chat template holds {ids.count(adapter.image_token_id)} image placeholders, not one")
    return ids.index(adapter.image_token_id)


def check_image_size(image_size: int | None, family: str | None) -> None:
    """``--image-size`` fixes Qwen2.5-VL's grid; the other families' size is their tower's."""
    if image_size is None:
        return
    if family is not None and family != "qwen2.5-vl":
        raise EdgeCompressError(f"--image-size is for Qwen2.5-VL; a {family} model's image size is its vision tower's",
                                hint="Drop --image-size.")
    if image_size < 112 or image_size % 112:
        raise EdgeCompressError(f"--image-size {image_size} is not a positive multiple of 112 px (Qwen2.5-VL's "
                                "attention window)", hint="Use 448 (256 tokens), 560, 672 (576 tokens), ...")


PIXEL_INPUTS = ("float", "uint8", "frame:WxH")
MAX_FRAME_SIDE = 8192


def parse_pixel_input(pixel_input: str) -> tuple[str, tuple[int, int] | None]:
    """("float" | "uint8" | "frame", the frame's (width, height) for frame:WxH)."""
    if pixel_input in ("float", "uint8"):
        return pixel_input, None
    kind, _, size = pixel_input.partition(":")
    width, _, height = size.lower().partition("x")
    if kind != "frame" or not width.isdigit() or not height.isdigit():
        raise EdgeCompressError(f"unknown --pixel-input {pixel_input!r}",
                                hint=f"Use one of: {', '.join(PIXEL_INPUTS)} (e.g. frame:1920x1080, the camera's frame size).")
    frame = int(width), int(height)
    if not all(14 <= side <= MAX_FRAME_SIDE for side in frame):
        raise EdgeCompressError(f"--pixel-input {pixel_input}: each side of a frame must be 14 to {MAX_FRAME_SIDE} pixels")
    return "frame", frame


def check_pixel_input(pixel_input: str, family: str | None) -> tuple[str, tuple[int, int] | None]:
    kind, frame = parse_pixel_input(pixel_input)
    if kind != "float" and family == "llava-next":
        raise EdgeCompressError(f"--pixel-input {pixel_input} is for LLaVA-1.5 bundles: a LLaVA-NeXT vision graph takes "
                                "several resized tiles padded into fixed slots, which the runtime still normalises",
                                hint="Export LLaVA-NeXT without --pixel-input (float pixels).")
    if kind != "float" and family == "qwen2.5-vl":
        raise EdgeCompressError(f"--pixel-input {pixel_input} is for LLaVA-1.5 bundles: a Qwen2.5-VL vision graph takes patch "
                                "rows, which the runtime cuts from the normalised image",
                                hint="Export Qwen2.5-VL without --pixel-input (float pixels).")
    return kind, frame


DECODER_OPS = ("standard", "onnxruntime")
# Largest next-token logit difference allowed between the fused and the standard decoder graph,
# relative to the largest logit: the fused kernels sum in another order (fp32: ~1e-6 measured on
# tiny-llava), fp16 rounds each partial sum (1e-3 of the scale per rounding, a few of them).
FUSED_LOGIT_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


def check_decoder_ops(decoder_ops: str, method, vision_only: bool, family: str | None = None) -> None:
    if decoder_ops not in DECODER_OPS:
        raise EdgeCompressError(f"unknown --decoder-ops {decoder_ops!r}", hint=f"Use one of: {', '.join(DECODER_OPS)}.")
    if decoder_ops == "onnxruntime" and vision_only:
        raise EdgeCompressError("--decoder-ops onnxruntime with --vision-only: there is no decoder graph to fuse")
    if decoder_ops == "onnxruntime" and family == "qwen2.5-vl":
        raise EdgeCompressError("--decoder-ops onnxruntime is not available for Qwen2.5-VL: ONNX Runtime's "
                                "GroupQueryAttention rotates by one position per token, and mRoPE needs three",
                                hint="Export without --decoder-ops (the standard graph runs on ONNX Runtime).")
    if decoder_ops == "onnxruntime" and method.stage == "decoder":
        raise EdgeCompressError(f"--decoder-ops onnxruntime with --method {method.name}: the fused decoder graph is "
                                "made for methods that prune before the language model",
                                hint="Export without --decoder-ops (the standard graph runs on ONNX Runtime too).")


def onnxruntime_decoder_entry(staging: Path, standard: dict[str, Any], layers: int, max_positions: int,
                              weights: str | None) -> dict[str, Any]:
    """Write decoder-onnxruntime.onnx next to the standard decoder graph (sharing its weight
    file; the tensors it adds go to decoder-onnxruntime.onnx.data), check its logits against the
    standard graph's, and return its manifest entry."""
    import onnx

    from edgecompress.lowering.fuse import externalize_new_tensors, onnxruntime_decoder
    from edgecompress_runtime.shared_cache import SHARED_BUFFER

    model = onnx.load(str(staging / standard["file"]), load_external_data=False)  # weights stay where they are
    model, fused = onnxruntime_decoder(model, layers, max_positions, base_dir=staging)
    name = "decoder-onnxruntime.onnx"
    data = f"{name}.data"
    externalize_new_tensors(model, staging, data)
    onnx.save(model, str(staging / name))
    dtype = standard["inputs"][0]["dtype"]
    difference = fused_logit_difference(staging / standard["file"], staging / name, standard, weights)
    if difference > FUSED_LOGIT_TOLERANCE[dtype]:
        raise EdgeCompressError(f"the fused decoder graph's logits differ from the standard graph's by {difference:.2e} "
                                f"of their scale (at most {FUSED_LOGIT_TOLERANCE[dtype]} expected)",
                                hint="Export without --decoder-ops onnxruntime, and report this model.")
    files = [name, data, *(f for f in standard["files"] if f != standard["file"])]
    return {**shared_buffer_spec(standard), "file": name, "files": files, "ops": "onnxruntime", "fused": fused,
            # the runtime allocates each cache tensor once at max_length and binds it as past and present
            "kv_cache": {"kind": SHARED_BUFFER, "max_length": max_positions},
            "check": {"max_logit_difference": float(f"{difference:.3g}"), "relative_to": "largest logit"}}


def shared_buffer_spec(standard: dict[str, Any]) -> dict[str, Any]:
    """The fused graph's inputs and outputs: the standard graph's, the cache axis named
    cache_length on past and present (one buffer), and the two length inputs."""
    from edgecompress_runtime.shared_cache import SEQLENS_K, TOTAL_LENGTH

    def cache(tensor: dict[str, Any]) -> dict[str, Any]:
        if not tensor["name"].startswith(("past.", "present.")):
            return tensor
        return {**tensor, "shape": [*tensor["shape"][:2], "cache_length", *tensor["shape"][3:]]}

    inputs = [cache(t) for t in standard["inputs"]] + [{"name": SEQLENS_K, "shape": [1], "dtype": "int32"},
                                                       {"name": TOTAL_LENGTH, "shape": [], "dtype": "int32"}]
    axes = {name: axes for name, axes in standard["dynamic_axes"].items() if not name.startswith(("past.", "present."))}
    axes.update({t["name"]: {"2": "cache_length"} for t in inputs
                 if t["name"].startswith(("past.", "present."))})
    return {"name": standard["name"], "inputs": inputs, "outputs": [cache(t) for t in standard["outputs"]],
            "dynamic_axes": axes}


def fused_logit_difference(standard: Path, fused: Path, spec: dict[str, Any], weights: str | None) -> float:
    """The largest next-token logit difference between the standard and the fused decoder graph,
    relative to the largest logit, over a 24-token prefill and 3 decode steps of seeded random
    embeddings (the fused graph given caches of the valid length: it concatenates then)."""
    import numpy as np
    import onnxruntime as ort

    from edgecompress_runtime.shared_cache import length_feeds
    from edgecompress_runtime.backends import weight_only_config

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in weight_only_config(weights):
        options.add_session_config_entry(key, value)
    sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for path in (standard, fused)]
    embeds, past_inputs = spec["inputs"][0], spec["inputs"][2:]
    rng = np.random.default_rng(0)
    hidden = embeds["shape"][-1]
    feeds = {p["name"]: np.zeros([d if isinstance(d, int) else 0 for d in p["shape"]], dtype=p["dtype"]) for p in past_inputs}
    pasts, worst, length = [dict(feeds), dict(feeds)], 0.0, 0
    for new in (24, 1, 1, 1):
        inputs = {"inputs_embeds": rng.standard_normal((1, new, hidden)).astype(embeds["dtype"]),
                  "position_ids": np.arange(length, length + new, dtype=np.int64)[None]}
        lengths = [{}, length_feeds(length, new)]
        outputs = [session.run(None, {**inputs, **past, **extra}) for session, past, extra in zip(sessions, pasts, lengths)]
        scale = max(float(np.abs(outputs[0][0]).max()), 1e-6)
        worst = max(worst, float(np.abs(outputs[0][0].astype(np.float32) - outputs[1][0].astype(np.float32)).max()) / scale)
        for past, values in zip(pasts, outputs):
            past.update({p["name"]: value for p, value in zip(past_inputs, values[1:])})
        length += new
    return worst


def verified_entry(staging: Path, files: list[str], graph_spec) -> dict[str, Any]:
    """Run the verifier on an exported graph; fail the export (nothing written) if it finds anything."""
    from edgecompress.graph.export import load_graph
    from edgecompress.lowering.verifier import verify_graph

    report = verify_graph(load_graph(staging / files[0]), graph_spec)
    if not report.ok:
        lines = "\n".join(f"  - [{f.check}] {f.message}" for f in report.findings)
        raise EdgeCompressError(f"the exported {graph_spec.name} graph failed verification:\n{lines}")
    return {**graph_spec.to_dict(), "file": files[0], "files": files, "verify": report.to_dict()}


def write_text_assets(adapter, staging: Path, k: int, dtype, pruning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The token-embedding table, the tokenizer, the prompt template and the sequence limits.

    With a decoder-stage method the language model reads all N image tokens (positions run to
    the full prompt length), and the pruned layers' caches hold N - K fewer."""
    import numpy as np

    table = adapter.model.get_input_embeddings().weight.detach().to(dtype).numpy()
    np.save(staging / "embed_tokens.npy", table)
    lm = adapter.language_model_facts()
    max_sequence = lm["max_position_embeddings"]
    tokenizer_file = adapter.save_tokenizer(staging)
    image_tokens = k if pruning is None else pruning["image_tokens"]
    shortest = image_tokens + 1 if pruning is None else pruning["image_start"] + image_tokens + 1
    limits = {
        # K is fixed, so the prefill length range and the KV length are known exactly.
        "max_sequence": max_sequence,
        "image_tokens": image_tokens,
        "prefill_length": [shortest, max_sequence],
        "max_text_tokens": max_sequence - image_tokens,
        "max_kv_length": max_sequence,
    }
    if pruning is not None:
        limits["max_kv_length_pruned"] = max_sequence - image_tokens + k
    return {
        "language_model": lm,
        "embeddings": {"file": "embed_tokens.npy", "shape": list(table.shape), "dtype": str(table.dtype)},
        "tokenizer": {"file": tokenizer_file} if tokenizer_file else None,
        "prompt_template": adapter.chat_prompt_template(),
        "follow_up_template": adapter.chat_follow_up_template(),
        "generation": {"eos_token_ids": adapter.eos_token_ids(), "decoding": "greedy"},
        "limits": limits,
    }


def build_manifest(spec, adapter, plan: VisionPlan, precision, graphs, text, random_weights) -> dict[str, Any]:
    recipe = spec.recipe.to_dict() if spec.recipe else {"name": spec.name, "family": adapter.family, "source": spec.location}
    recipe.pop("config", None)  # the architecture is recorded below, from the loaded model
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": tool_versions(),
        "recipe": recipe,
        "source": adapter.source,
        "random_weights": random_weights,
        "model": adapter.describe(),
        "architecture": adapter.config.to_dict(),
        "method": plan.method.name,
        "method_details": plan.details,
        "precision": precision,
        "budget": plan.budget.to_dict(),
        "n": plan.budget.n,
        "k": plan.k,
        "token_order": plan.token_order,
        **plan.extra,
        "preprocess": {**adapter.preprocess, "image_size": adapter.vision_config.image_size},
        "prompt_template": adapter.prompt_template,
        "image_token_id": adapter.image_token_id,
        **text,
        "graphs": graphs,
    }
