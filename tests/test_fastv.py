"""FastV: pruning image tokens inside the language model at decoder layer L.

Against the authors' math written plainly from transformers' own model (tests/authors_fastv.py),
then one exported bundle: verified graphs, ONNX Runtime's prefill keeping what PyTorch keeps,
the runtime generating what the PyTorch FastV pipeline generates, the memory plan counting each
layer's cache at its length, TensorRT-RTX building the three engines, and the refusals.

Tolerances. Kept tokens are compared under the fp32 tie band of edgecompress.parity (1e-5 of
the cut-off score, relative) by the head-mean attention scores they rank by. Logits within 1e-4
absolute: fp32 round-off of a 4-layer model whose logits are O(1), as in the other parity tests
(the PyTorch module and transformers' own forward sum the same products in different orders).
"""

import importlib.util
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress import export_bundle
from edgecompress.methods import get_method
from edgecompress.parity import compare_selections
from edgecompress.reference import chat_text, decoder_pruned_generate, vision_inputs
from edgecompress_runtime import Pipeline
from tests.authors_fastv import authors_fastv_generate
from tests.conftest import run_cli

N, K, LAYER = 576, 115, 2  # tiny-llava-random: 576 patches; 20% -> 115; the authors' default layer
PROMPT = "What is in the picture?"
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.fixture(scope="module")
def fastv_bundle(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("fastv") / "bundle"
    return export_bundle("tiny-llava-random", method="fastv", budget="20%", precision="fp32", layer=LAYER, out=out)


@pytest.fixture(scope="module")
def manifest(fastv_bundle):
    return json.loads((fastv_bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def vision_none(tiny_fp32):
    return tiny_fp32.plan_vision(get_method("none"), "100%", "fp32").module


def prompt_embeds(model, processor, vision, image):
    """(the chat prompt's embeddings with all N image embeddings in place of the placeholder,
    the image's start), from transformers' tokenizer and chat template."""
    ids = processor.tokenizer(chat_text(processor, PROMPT), return_tensors="pt")["input_ids"][0]
    at = ids.tolist().index(model.config.image_token_id)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        image_embeds, _ = vision(*vision_inputs(model, processor, image))
        return torch.cat([embed(ids[None, :at]), image_embeds, embed(ids[None, at + 1 :])], dim=1), at


def fastv_modules(adapter, layer, start, k=K):
    prefill, decode = adapter.plan_pruned_decoder(get_method("fastv"), layer, start, N, k, "fp32")
    return prefill.module, decode.module


# -- the authors' math ------------------------------------------------------------------------


def test_fastv_math_keeps_the_most_attended_image_tokens_and_every_text_token():
    """On tensors alone: heads averaged, the image span's top K in prompt order, text untouched."""
    from edgecompress.methods import DecoderInputs

    hidden = torch.arange(10, dtype=torch.float32).view(1, 10, 1).expand(1, 10, 3)  # token i holds i
    attention = torch.zeros(1, 2, 10)
    attention[0, 0, 2:8] = torch.tensor([0.1, 0.9, 0.2, 0.5, 0.0, 0.3])  # image tokens at 2..7
    attention[0, 1, 2:8] = torch.tensor([0.1, 0.1, 0.6, 0.5, 0.0, 0.3])  # head mean: .1 .5 .4 .5 0 .3
    attention[0, :, 9] = 5.0  # text scores never compete with image tokens
    pruned, kept = get_method("fastv").select(DecoderInputs(hidden, attention, 2, 6), 3)
    assert kept.tolist() == [[1, 2, 3]]
    assert pruned[0, :, 0].tolist() == [0, 1, 3, 4, 5, 8, 9]


@pytest.mark.parametrize("layer", [1, 2, 3])
@pytest.mark.parametrize("image", ["noise", "scene"])
def test_fastv_is_the_authors_selection_and_later_layers(tiny_fp32, eager, processor, vision_none, images, layer, image):
    embeds, start = prompt_embeds(eager, processor, vision_none, images[image])
    eos = set(tiny_fp32.eos_token_ids())
    kept, scores, logits, tokens = authors_fastv_generate(eager, embeds, layer, start, N, K, 6, eos)
    prefill, decode = fastv_modules(tiny_fp32, layer, start)
    reference = decoder_pruned_generate(tiny_fp32.model, processor, vision_none, prefill, decode, images[image], PROMPT, 6)
    agreement = compare_selections(reference.kept_indices, kept, scores.numpy())
    assert agreement.agree, agreement
    assert agreement.identical or image != "scene"  # the scene image has no near-tie at the cut-off
    np.testing.assert_allclose(np.array(reference.scores), scores.numpy(), atol=1e-6, rtol=1e-5)
    if agreement.identical:
        np.testing.assert_allclose(reference.prefill_logits.numpy(), logits.numpy(), atol=1e-4, rtol=0)
        assert reference.token_ids == tokens


def test_keeping_every_image_token_is_the_unpruned_model(tiny_fp32, eager, processor, vision_none, images):
    """K = N: FastV's prefill computes exactly the unpruned model's logits (its own layer loop,
    masks and rotary embeddings against transformers' forward)."""
    embeds, start = prompt_embeds(eager, processor, vision_none, images["scene"])
    prefill, _ = fastv_modules(tiny_fp32, LAYER, start, k=N)
    with torch.no_grad():
        logits, kept, *present = prefill(embeds, torch.arange(embeds.shape[1])[None])
        expected = eager(inputs_embeds=embeds).logits[0, -1]
    assert kept[0].tolist() == list(range(N))
    np.testing.assert_allclose(logits[0, 0].numpy(), expected.numpy(), atol=1e-5, rtol=0)


# -- the exported bundle ------------------------------------------------------------------------


def test_bundle_records_the_pruning_and_every_graph_verifies(manifest, processor):
    start = processor.tokenizer(chat_text(processor, PROMPT))["input_ids"].index(manifest["image_token_id"])
    assert manifest["method"] == "fastv" and manifest["k"] == K and manifest["n"] == N
    assert manifest["decoder_pruning"] == {"method": "fastv", "layer": LAYER, "image_start": start, "image_tokens": N,
                                           "kept_image_tokens": K}
    assert set(manifest["graphs"]) == {"vision", "prefill", "decoder"}
    assert all(graph["verify"]["ok"] for graph in manifest["graphs"].values())
    outputs = {t["name"]: t["shape"] for t in manifest["graphs"]["prefill"]["outputs"]}
    assert outputs["kept_indices"] == [1, K]
    assert outputs[f"present.{LAYER - 1}.key"][2] == "sequence"
    assert outputs[f"present.{LAYER}.key"][2] == f"sequence - {N - K}"
    past = {t["name"]: t["shape"][2] for t in manifest["graphs"]["decoder"]["inputs"][2:]}
    assert past[f"past.{LAYER - 1}.value"] == "past" and past[f"past.{LAYER}.value"] == "past_pruned"
    assert [t["shape"] for t in manifest["graphs"]["vision"]["outputs"]] == [[1, N, 64], [1, N]]  # unpruned vision


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_onnxruntime_prefill_keeps_what_pytorch_keeps(fastv_bundle, manifest, tiny_fp32, eager, processor, vision_none,
                                                      images, image):
    embeds, start = prompt_embeds(eager, processor, vision_none, images[image])
    positions = torch.arange(embeds.shape[1])[None]
    prefill, _ = fastv_modules(tiny_fp32, LAYER, start)
    with torch.no_grad():
        logits, kept, *present = prefill(embeds, positions)
        scores = prefill.selection_scores(embeds, positions)[0].numpy()
    session = ort.InferenceSession(str(fastv_bundle / "prefill.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"inputs_embeds": embeds.numpy(), "position_ids": positions.numpy()})
    agreement = compare_selections(out[1][0], kept[0].tolist(), scores)
    assert agreement.agree, agreement
    length = embeds.shape[1]
    assert [p.shape[2] for p in out[2:]] == [length] * (2 * LAYER) + [length - N + K] * (2 * (4 - LAYER))
    if agreement.identical:
        np.testing.assert_allclose(out[0], logits.numpy(), atol=1e-4, rtol=0)
        for ours, theirs in zip(out[2:], present):
            np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("image", ["noise", "scene"])
def test_bundle_generates_what_the_pytorch_fastv_pipeline_generates(fastv_bundle, manifest, tiny_fp32, processor,
                                                                    vision_none, images, image):
    start = manifest["decoder_pruning"]["image_start"]
    prefill, decode = fastv_modules(tiny_fp32, LAYER, start)
    reference = decoder_pruned_generate(tiny_fp32.model, processor, vision_none, prefill, decode, images[image], PROMPT, 12)
    result = Pipeline.load(fastv_bundle).generate_full(images[image], PROMPT, max_new_tokens=12)
    agreement = compare_selections(result.kept_indices, reference.kept_indices, reference.scores)
    assert agreement.identical, agreement  # these images: no near-tie at the cut-off
    assert result.token_ids == reference.token_ids
    assert result.image_tokens == N  # the language model read every image token; the prefill kept K
    np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)


def test_runtime_refuses_a_prompt_whose_image_moved(fastv_bundle, images):
    from edgecompress_runtime.errors import EdgeCompressError

    pipe = Pipeline.load(fastv_bundle)
    pipe.prompt_template = "Look closely. " + pipe.prompt_template  # text before the image: it starts later
    with pytest.raises(EdgeCompressError, match="prunes the image tokens from token"):
        pipe.generate(images["scene"], PROMPT, max_new_tokens=2)


# -- memory and engines -------------------------------------------------------------------------


def test_memory_plan_counts_the_pruned_layers_cache_at_k(tiny_spec):
    from edgecompress.architecture import Architecture
    from edgecompress.engine.memory import plan_memory
    from edgecompress.engine.profiles import load_profile

    config = tiny_spec.recipe.config
    text = Architecture.from_config(config).text
    profile = load_profile("rtx-4090")
    unpruned = plan_memory(config, N, profile, "fp16")
    fastv = plan_memory(config, K, profile, "fp16", pruned_at=(LAYER, N))
    # each layer from L on holds N - K fewer tokens (K and V, kv heads x head dim, 2 bytes each)
    saved = 2 * text.kv_heads * text.head_dim * 2 * (text.layers - LAYER) * (N - K)
    assert unpruned.rows["KV cache"] - fastv.rows["KV cache"] == saved
    assert fastv.kv_lengths[:LAYER] == unpruned.kv_lengths[:LAYER]
    assert fastv.kv_lengths[LAYER:] == [unpruned.kv_lengths[0] - (N - K)] * (text.layers - LAYER)
    assert fastv.rows["activations (est.)"] == unpruned.rows["activations (est.)"]  # the prefill reads all N


def test_plan_command_shows_the_smaller_cache():
    result = run_cli("plan", "llava-1.5-7b", "--profile", "jetson-agx-orin-64gb", "--method", "fastv", "--budget", "25%")
    assert result.returncode == 0, result.stderr
    assert "layers 0-1: 3648 tokens, layers 2-31: 3216 tokens" in result.stdout  # 3648 - (576 - 144)


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
def test_tensorrt_rtx_builds_the_vision_prefill_and_decoder_engines(fastv_bundle, tmp_path):
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    bundle = tmp_path / "bundle"
    shutil.copytree(fastv_bundle, bundle)  # a build writes into the bundle; the shared one stays as exported
    record = build_engines(bundle, load_profile("rtx-4090"))
    assert set(record["graphs"]) == {"vision", "prefill", "decoder"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in record["graphs"].items():
        assert (bundle / entry["file"]).stat().st_size > 100_000
        declared = manifest["graphs"][name]
        assert [b["name"] for b in entry["bindings"]] == [t["name"] for t in declared["inputs"] + declared["outputs"]]
    prefill = record["graphs"]["prefill"]
    assert {b["name"]: b["shape"] for b in prefill["bindings"]}["kept_indices"] == [1, K]
    (shortest, _, _), = [prefill["optimization_profiles"][0]["inputs_embeds"]]
    assert shortest[1] == manifest["decoder_pruning"]["image_start"] + N + 1
    decode = record["graphs"]["decoder"]["optimization_profiles"]
    assert len(decode) == 1  # decode only: the prefill graph fills the cache
    full, pruned = decode[0][f"past.{LAYER - 1}.key"], decode[0][f"past.{LAYER}.key"]
    assert pruned[2][2] == full[2][2] - (N - K)


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--method", "fastv", "--layer", "4"], "--layer 4 is outside the range fastv can prune at"),
    (["--method", "fastv", "--layer", "0"], "--layer 0 is outside the range fastv can prune at"),
    (["--method", "hired", "--layer", "2"], "--layer is for methods that prune inside the language model"),
    (["--method", "tome+fastv"], "cannot combine 'tome' and 'fastv'"),
    (["--method", "fastv", "--vision-only"], "--vision-only with --method fastv"),
])
def test_bad_fastv_options_are_refused_cleanly(args, message, tmp_path):
    result = run_cli("export", "tiny-llava-random", *args, "--out", str(tmp_path / "never"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "never").exists()


def test_list_methods_shows_fastv_in_the_decoder():
    result = run_cli("list", "methods")
    row = next(line for line in result.stdout.splitlines() if line.startswith("fastv"))
    assert "decoder, at layer 2" in row and "decoder_attention" in row and "pkunlp-icler/FastV" in row


def test_validate_compares_the_bundle_with_the_pytorch_fastv_pipeline(fastv_bundle, tmp_path):
    from edgecompress.data.shapes import generate_shapes
    from edgecompress.validate import validate_bundle

    generate_shapes(tmp_path / "shapes", count=4, seed=7)
    bundle = tmp_path / "bundle"
    shutil.copytree(fastv_bundle, bundle)  # validate writes its reports into the bundle
    summary, _ = validate_bundle(bundle, tmp_path / "shapes" / "train.jsonl", limit=3, max_new_tokens=4)
    assert summary["questions"] == 3
    assert summary["agreement"]["bundle_vs_pytorch_pruned"] == 1.0
    kept = summary["kept_tokens_vs_pytorch_pruned"]
    assert kept["compared"] == 3 and kept["agree_within_tie_band"] == 1.0


def test_the_cpp_runtime_answers_as_python(fastv_bundle, tmp_path):
    """The C++ runtime runs the prefill graph (pruning inside the language model) and the
    shorter-cache decode steps token for token as the Python runtime (exact: same graphs)."""
    from tests.cpp_build import build_cpp
    from tests.cpp_parity import assert_same_answers, write_photos

    assert_same_answers(build_cpp(), fastv_bundle, write_photos(tmp_path / "images"), tmp_path)
