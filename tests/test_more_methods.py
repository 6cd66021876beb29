"""VTC-CLS, VisionZip, DivPrune and DART (pre-LLM): each against its authors' math written plainly
here from transformers' own outputs, then exported, verified, run in ONNX Runtime against the
PyTorch module, generating what the PyTorch pruned pipeline generates, and built by TensorRT-RTX.

Tolerances. Kept indices are compared under the tie-band rule (edgecompress.parity): VTC-CLS by
its scores; VisionZip, DivPrune and DART, which have no single ranking, by their ``accepts``
replay (fp32 band 1e-5 of the best choice at each step, relative, and absolute for values
under 1 such as cosines): flat image regions give near-equal scores, norms and cosines that
two fp32 kernels order differently. Embeddings within 1e-4 absolute: fp32 round-off of a
tower whose activations are O(1), as in the other parity tests.
"""

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress import export_bundle
from edgecompress.methods import VisionInputs, get_method
from edgecompress.methods.dart import plan as dart_plan
from edgecompress.methods.visionzip import contextual_assignment, split as visionzip_split
from edgecompress.models.llava import pruned_vision
from edgecompress.parity import compare_selections
from edgecompress.reference import pruned_generate
from edgecompress_runtime import Pipeline

METHODS = ("vtc-cls", "visionzip", "divprune", "dart")
K = 115  # 20% of tiny-llava-random's 576 patches
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.fixture(scope="module")
def method_bundles(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("more-methods")
    return {m: export_bundle("tiny-llava-random", method=m, budget="20%", precision="fp32", out=root / m) for m in METHODS}


def tower_outputs(eager, pixel_values):
    """transformers' own hidden states, eager attentions and layer keys (the authors' inputs)."""
    tower = eager.model.vision_tower
    captured = {}
    feature = eager.config.vision_config.num_hidden_layers + eager.config.vision_feature_layer  # layer index
    hook = tower.encoder.layers[feature].self_attn.k_proj.register_forward_hook(
        lambda module, args, out: captured.setdefault("keys", out))
    try:
        with torch.no_grad():
            out = tower(pixel_values, output_hidden_states=True, output_attentions=True)
    finally:
        hook.remove()
    return out, captured["keys"], feature


# -- the authors' math, written plainly -------------------------------------------------------


def authors_vtc_cls(out, feature, k):
    """VTC-CLS ``cls_token_only``: sum of the head-mean CLS rows of attentions[start:-1] (for a
    feature layer one before the last), top-K, sorted ascending."""
    start = (feature * 16 + 11) // 22
    score = sum(a[0].mean(0)[0, 1:] for a in out.attentions[start:feature + 1])
    return sorted(torch.topk(score, k).indices.tolist()), score


def authors_visionzip(out, keys, feature, k, heads, assign=None):
    """VisionZip's dominant + contextual tokens (without CLS: LLaVA-1.5 drops it): features
    before the projector, the kept patch (dominant) / target (contextual) indices, each
    remaining patch's target and how far from a tie that choice is. ``assign`` overrides the
    choice (to compare the merge itself where two kernels break a near-tie differently)."""
    dominant_k, contextual_k = visionzip_split(k)
    hidden = out.hidden_states[feature + 1][0, 1:]  # [N, D]
    n = hidden.shape[0]
    cls_attention = out.attentions[feature][0, :, 0, 1:].sum(0)
    dominant = sorted(torch.topk(cls_attention, dominant_k).indices.tolist())
    metric = keys[0, 1:].view(n, heads, -1).mean(1)
    remaining = [i for i in range(n) if i not in dominant]
    step = max(1, len(remaining) // contextual_k)
    target_pos = list(range(0, len(remaining), step))[:contextual_k]
    targets = [remaining[p] for p in target_pos]
    others = [remaining[p] for p in range(len(remaining)) if p not in target_pos]
    chosen, margin = assignment(metric, targets, others)
    assign = chosen if assign is None else assign
    contextual = []
    for j, t in enumerate(targets):
        members = [others[i] for i in range(len(others)) if int(assign[i]) == j]
        merged = hidden[members].mean(0) if members else torch.zeros_like(hidden[t])
        contextual.append(hidden[t] + merged)
    tokens = torch.cat([hidden[dominant], torch.stack(contextual)])
    return dominant + targets, tokens, chosen, margin


def assignment(metric, targets, others):
    """Each other patch's most cosine-similar target by key [M], and the similarity gap to the
    runner-up [M]."""
    metric = metric / metric.norm(dim=-1, keepdim=True)
    similarity = metric[others] @ metric[targets].T
    top2 = torch.topk(similarity, 2, dim=1).values
    return similarity.argmax(dim=1), top2[:, 0] - top2[:, 1]


def authors_divprune(projected, k):
    """vbdi/divprune ``DivPrune``: 1 - cosine distances; the first pick by the second-smallest
    value of its column, then by the minimum over the picked rows; argmax each time."""
    x = projected / projected.norm(dim=1, keepdim=True)
    distance = 1.0 - x @ x.T
    picks = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(distance, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(distance[picks], dim=0).values
        picks.append(int(torch.argmax(scores)))
    return sorted(picks)


def authors_dart(projected, k):
    """DART's duplication rule on the embeddings (pre-LLM): pivots by norm; pivot by pivot the
    tokens least cosine-similar to it among those not taken."""
    shares = dart_plan(k)
    pivots = torch.topk(projected.norm(dim=1), len(shares)).indices.tolist()
    unit = projected / projected.norm(dim=1, keepdim=True)
    taken = list(pivots)
    for pivot, share in zip(pivots, shares):
        similarity = unit @ unit[pivot]
        order = [int(i) for i in torch.argsort(similarity)]  # least similar first
        taken += [i for i in order if i not in taken][:share]
    return sorted(taken)


def module_inputs(tiny_fp32, method, pixel_values) -> tuple:
    module = pruned_vision(tiny_fp32, get_method(method), K)
    with torch.no_grad():
        embeds, kept = module(pixel_values)
        inputs = module.method_inputs(pixel_values)
    return module, embeds[0], kept[0].tolist(), inputs


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_vtc_cls_is_the_authors_multi_layer_cls_score(tiny_fp32, eager, pixels, image):
    out, _, feature = tower_outputs(eager, pixels[image])
    expected, score = authors_vtc_cls(out, feature, K)
    module, _, kept, inputs = module_inputs(tiny_fp32, "vtc-cls", pixels[image])
    assert sorted(inputs.layer_attention) == [1, 2]  # layers 1..2 of the 4-layer tower, feature layer 2
    torch.testing.assert_close(get_method("vtc-cls").score(inputs)[0], score, atol=1e-6, rtol=1e-5)
    assert compare_selections(kept, expected, score.numpy()).agree


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_visionzip_is_the_authors_dominant_and_contextual_tokens(tiny_fp32, eager, pixels, image):
    out, keys, feature = tower_outputs(eager, pixels[image])
    heads = tiny_fp32.vision_config.num_attention_heads
    expected, _, theirs, margin = authors_visionzip(out, keys, feature, K, heads)
    module, embeds, kept, inputs = module_inputs(tiny_fp32, "visionzip", pixels[image])
    assert visionzip_split(K) == (97, 18) and len(kept) == K
    agreement = compare_selections(kept, expected, accepts=lambda other, band: get_method("visionzip").accepts(inputs, other, band))
    assert agreement.agree, agreement
    if not agreement.identical:
        return
    # The merge assigns each remaining patch to its most key-similar target. Background patches
    # differ only by position embedding, so some assignments are within 1e-6 of a tie, which our
    # fp32 key recomputation and transformers' keys may break either way: assignments may differ
    # only where transformers' gap to the runner-up is under 1e-5 (fp32 round-off of a cosine
    # is ~1e-7); the merged tokens are then compared with the authors' formula on the
    # assignment the graph made.
    targets, _, ours = contextual_assignment(inputs, torch.tensor([kept[:97]]), K)  # what select assigned
    assert targets[0].tolist() == kept[97:]
    ours = ours[0]
    differ = ours != theirs
    assert bool((margin[differ] < 1e-5).all()), margin[differ]
    _, tokens, _, _ = authors_visionzip(out, keys, feature, K, heads, assign=ours)
    with torch.no_grad():
        torch.testing.assert_close(embeds, tiny_fp32.projector(tokens), atol=1e-4, rtol=0)


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_divprune_is_the_authors_greedy_max_min(tiny_fp32, pixels, image):
    module, _, kept, inputs = module_inputs(tiny_fp32, "divprune", pixels[image])
    expected = authors_divprune(inputs.features[0], K)
    method = get_method("divprune")
    assert compare_selections(kept, expected, accepts=lambda other, band: method.accepts(inputs, other, band)).agree
    # the replay is a real check: it refuses a selection the greedy could not make
    wrong = sorted(set(range(576)) - set(kept))[:K]
    assert not method.accepts(inputs, wrong, 1e-5)


@pytest.mark.parametrize("image", ["noise", "flat", "scene"])
def test_dart_is_duplication_aware_selection_on_the_embeddings(tiny_fp32, pixels, image):
    _, embeds, kept, inputs = module_inputs(tiny_fp32, "dart", pixels[image])
    method = get_method("dart")
    assert compare_selections(kept, authors_dart(inputs.features[0], K),
                              accepts=lambda other, band: method.accepts(inputs, other, band)).agree
    torch.testing.assert_close(embeds, inputs.features[0][kept])  # after the projector: gathered, not re-projected
    assert not method.accepts(inputs, sorted(set(range(576)) - set(kept))[:K], 1e-5)
    assert dart_plan(115) == [14, 14, 14, 13, 13, 13, 13, 13] and dart_plan(9) == [8] and sum(dart_plan(57)) + 7 == 57


def test_methods_read_only_what_they_declare(tiny_fp32, pixels):
    for method, present in (("vtc-cls", {"layer_attention"}), ("visionzip", {"cls_attention", "keys"}),
                            ("divprune", set()), ("dart", set())):
        _, _, _, inputs = module_inputs(tiny_fp32, method, pixels["scene"])
        given = {name for name in ("cls_attention", "layer_attention", "keys") if getattr(inputs, name) is not None}
        assert given == present, method
        width = 64  # the tower's hidden size; projected tokens have the language model's (64 here too)
        assert inputs.features.shape[:2] == (1, 576) and inputs.features.shape[-1] == width


# -- exported -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("image", ["noise", "scene"])
def test_onnxruntime_keeps_what_pytorch_keeps(method_bundles, tiny_fp32, pixels, method, image):
    import json

    manifest = json.loads((method_bundles[method] / "manifest.json").read_text())
    assert manifest["graphs"]["vision"]["verify"]["ok"] and manifest["k"] == K and manifest["method"] == method
    session = ort.InferenceSession(str(method_bundles[method] / "vision.onnx"), providers=["CPUExecutionProvider"])
    embeds, kept = session.run(None, {"pixel_values": pixels[image].numpy()})
    module, ref_embeds, ref_kept, inputs = module_inputs(tiny_fp32, method, pixels[image])
    m = get_method(method)
    scores = None if m.score is None else m.score(inputs)[0].numpy()
    accepts = None if m.accepts is None else (lambda other, band: m.accepts(inputs, other, band))
    agreement = compare_selections(kept[0], ref_kept, scores, accepts=accepts)
    assert agreement.agree, agreement
    if agreement.identical:
        np.testing.assert_allclose(embeds[0], ref_embeds.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_bundles_generate_what_the_pytorch_pipeline_generates(method_bundles, tiny_fp32, processor, images, method):
    module = pruned_vision(tiny_fp32, get_method(method), K)
    reference = pruned_generate(tiny_fp32.model, processor, module, images["scene"], "What is in the picture?", 12)
    result = Pipeline.load(method_bundles[method]).generate_full(images["scene"], "What is in the picture?", max_new_tokens=12)
    assert compare_selections(result.kept_indices, reference.kept_indices, reference.scores,
                              accepts=reference.accepts).identical  # the scene image: no near-ties for these methods
    assert result.token_ids == reference.token_ids
    np.testing.assert_allclose(result.prefill_logits, reference.prefill_logits.numpy(), atol=1e-4, rtol=0)


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx is not installed (pip install tensorrt-rtx)")
@pytest.mark.parametrize("method", METHODS + ("tome",))
def test_tensorrt_rtx_builds_each_methods_vision_engine(tmp_path, tiny_checkpoint, method):
    from edgecompress.engine.builder import build_engines
    from edgecompress.engine.profiles import load_profile

    bundle = export_bundle("tiny-llava-random", method=method, budget="20%", precision="fp16", vision_only=True,
                           out=tmp_path / method)
    record = build_engines(bundle, load_profile("rtx-4090"))
    assert list(record["graphs"]) == ["vision"]  # a vision-only bundle
    entry = record["graphs"]["vision"]
    assert (bundle / entry["file"]).stat().st_size > 100_000
    assert [b["name"] for b in entry["bindings"]] == ["pixel_values", "image_embeds", "kept_indices"]
    assert entry["bindings"][1]["shape"] == [1, K, 64]


# -- ToMe: merging inside the tower -------------------------------------------------------------


def authors_tome(tiny, pixel_values, merges):
    """facebookresearch/ToMe on transformers' CLIP layers, written plainly: in every layer, attention
    with log(size) added to the logits, then bipartite soft matching on the head-mean keys (even
    tokens A, odd tokens B, CLS protected; argsort of each A token's best match, the first r merge,
    the unmerged re-sorted), a size-weighted merge by scatter-add, then the MLP. Returns the
    features after the feature layer (CLS dropped) and each token's source patch."""
    tower = tiny.vision_tower
    with torch.no_grad():
        x = tower.pre_layrnorm(tower.embeddings(pixel_values))
        size = torch.ones(1, x.shape[1], 1)
        source = torch.arange(x.shape[1])[None, :, None]
        for layer, r in zip(tower.encoder.layers, merges):
            normed = layer.layer_norm1(x)
            mask = size.log()[:, None, None, :, 0].expand(-1, -1, x.shape[1], -1)
            x = x + layer.self_attn(normed, attention_mask=mask)[0]
            heads = tiny.vision_config.num_attention_heads
            k = layer.self_attn.k_proj(normed).view(1, x.shape[1], heads, -1).transpose(1, 2)
            metric = k.mean(1)
            metric = metric / metric.norm(dim=-1, keepdim=True)
            a, b = metric[..., ::2, :], metric[..., 1::2, :]
            scores = a @ b.transpose(-1, -2)
            scores[..., 0, :] = -float("inf")
            node_max, node_idx = scores.max(dim=-1)
            edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
            unm_idx, src_idx = edge_idx[..., r:, :].sort(dim=1)[0], edge_idx[..., :r, :]
            dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

            def merge(t, mode="sum"):
                src, dst = t[..., ::2, :], t[..., 1::2, :]
                n, t1, c = src.shape
                unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
                src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
                return torch.cat([unm, dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)], dim=1)

            x = merge(x * size) / merge(size)
            size = merge(size)
            source = torch.cat([source[:, ::2].gather(1, unm_idx), source[:, 1::2]], 1)
            x = x + layer.mlp(layer.layer_norm2(x))
    return x[0, 1:], (source[0, 1:, 0] - 1).tolist()


def test_tome_is_the_authors_bipartite_merging(tiny_fp32, pixels):
    """On the noise image (no flat regions, so no near-tie decides a merge): the same tokens
    survive, in the same order, with features within fp32 round-off."""
    module, _, kept, inputs = module_inputs(tiny_fp32, "tome", pixels["noise"])
    assert module.merges == [173, 173, 115] and len(kept) == K
    features, sources = authors_tome(tiny_fp32, pixels["noise"], module.merges)
    assert kept == sources
    torch.testing.assert_close(inputs.features[0], features, atol=1e-4, rtol=0)


def test_tome_refuses_a_budget_its_layers_cannot_reach(tiny_fp32):
    from edgecompress.errors import EdgeCompressError

    with pytest.raises(EdgeCompressError, match="ToMe can merge 576 patches down to 72 at the least in 3 layers"):
        pruned_vision(tiny_fp32, get_method("tome"), 57)


def test_tome_exports_and_onnxruntime_merges_as_pytorch(tmp_path, tiny_checkpoint, tiny_fp32, pixels, processor, images):
    bundle = export_bundle("tiny-llava-random", method="tome", budget="20%", precision="fp32", out=tmp_path / "tome")
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    embeds, kept = session.run(None, {"pixel_values": pixels["noise"].numpy()})
    _, ref_embeds, ref_kept, _ = module_inputs(tiny_fp32, "tome", pixels["noise"])
    assert kept[0].tolist() == ref_kept
    np.testing.assert_allclose(embeds[0], ref_embeds.numpy(), atol=1e-4, rtol=0)
    # end to end: the bundle generates what the PyTorch pipeline generates from the merged tokens
    module = pruned_vision(tiny_fp32, get_method("tome"), K)
    reference = pruned_generate(tiny_fp32.model, processor, module, images["noise"], "What is it?", 8)
    result = Pipeline.load(bundle).generate_full(images["noise"], "What is it?", max_new_tokens=8)
    assert result.token_ids == reference.token_ids


def test_tome_then_hired_keeps_k_of_the_merged_tokens(tmp_path, tiny_checkpoint, tiny_fp32, pixels):
    """`--method tome+hired`: ToMe merges 576 patches to M = ceil((576 + 115) / 2) = 346 inside the
    tower, then HiRED keeps the 115 of them with the most CLS attention; the bundle in ONNX
    Runtime keeps the same tokens (noise image: no near-ties), and each kept index is a patch that
    survived the merge."""
    method = get_method("tome+hired")
    module, embeds, kept, inputs = module_inputs(tiny_fp32, "tome+hired", pixels["noise"])
    assert sum(module.merges) == 576 - 346 and len(kept) == K
    survivors = inputs.sources[0].tolist()
    top = torch.topk(inputs.cls_attention[0].sum(0), K).indices.sort().values
    assert kept == [survivors[int(i)] for i in top]
    bundle = export_bundle("tiny-llava-random", method=method.name, budget="20%", precision="fp32", out=tmp_path / "b")
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    out_embeds, out_kept = session.run(None, {"pixel_values": pixels["noise"].numpy()})
    assert out_kept[0].tolist() == kept
    np.testing.assert_allclose(out_embeds[0], embeds.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, message", [
    ("hired+tome", "cannot combine 'hired' and 'tome'"),
    ("tome+pool", "'pool' cannot follow 'tome'"),
    ("tome+vtc-cls", "'vtc-cls' cannot follow 'tome'"),
])
def test_combinations_that_make_no_sense_are_refused(name, message):
    from edgecompress.errors import EdgeCompressError

    with pytest.raises(EdgeCompressError, match=message):
        get_method(name)
