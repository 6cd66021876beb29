"""The method registry: a method is one module of math; registering one (in-process or through
the `edgecompress.methods` entry point group) is all it takes to export, verify and run it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from edgecompress.errors import EdgeCompressError
from edgecompress.methods import Method, VisionInputs, get_method, methods, register, unregister


def first_k(inputs: VisionInputs, k: int):
    """A toy method: the first K patches in raster order (no model internals needed)."""
    import torch

    from edgecompress.lowering.primitives import ordered_gather

    indices = torch.arange(k, dtype=torch.int64)[None].expand(inputs.features.shape[0], -1)
    return ordered_gather(inputs.features, indices), indices


TOY = Method(name="toy-first", summary="Toy: the first K patches", paper="tests/test_methods.py", select=first_k)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister(TOY.name)


def test_builtin_methods_are_discovered_from_their_modules():
    assert {"hired", "none", "random", "pool"} <= set(methods())
    hired = get_method("hired")
    assert hired.needs == ("cls_attention", "features") and hired.stage == "vision" and hired.partition_alpha == 0.5
    assert get_method("pool").output_k(115, 24) == 110 and get_method("hired").output_k(115, 24) == 115


def test_a_registered_method_exports_verifies_and_runs(toy, tmp_path, images):
    from edgecompress import export_bundle
    from edgecompress_runtime import Pipeline

    bundle = export_bundle("tiny-llava-49", method="toy-first", budget="20%", out=tmp_path / "toy")  # verified on export
    result = Pipeline.load(bundle).generate_full(images["scene"], "How many shapes are there?", max_new_tokens=4)
    assert result.kept_indices.tolist() == list(range(9))  # K = floor(49 * 0.2)
    assert result.image_tokens == 9 and result.token_ids


def test_registry_refusals(toy):
    with pytest.raises(EdgeCompressError, match="'toy-first' is already registered"):
        register(Method(name="toy-first", summary="", paper="", select=first_k))
    with pytest.raises(EdgeCompressError, match="needs text_attention, which no model adapter provides"):
        Method(name="bad", summary="", paper="", select=first_k, needs=("text_attention",))
    with pytest.raises(EdgeCompressError, match="stage 'audio' is not one of vision, tower, decoder"):
        Method(name="bad", summary="", paper="", select=first_k, stage="audio")
    with pytest.raises(EdgeCompressError, match="a decoder-stage method, and only one, gives default_layer"):
        Method(name="bad", summary="", paper="", select=first_k, stage="decoder", needs=("decoder_attention",))
    with pytest.raises(EdgeCompressError, match="a vision-stage method cannot need decoder_attention"):
        Method(name="bad", summary="", paper="", select=first_k, needs=("decoder_attention",))
    with pytest.raises(EdgeCompressError, match="unknown selection method 'nope'"):
        get_method("nope")


def test_a_method_without_a_partition_split_is_refused_for_llava_next(toy):
    from edgecompress.models.llava_next import check_anyres

    with pytest.raises(EdgeCompressError, match="(?s)'toy-first' is not available for LLaVA-NeXT.*hired, none"):
        check_anyres(TOY)


def test_a_plugin_registers_through_the_entry_point_group(tmp_path):
    """A real installed distribution (a dist-info folder on the path) with an entry point in the
    `edgecompress.methods` group: `list methods` shows its method."""
    (tmp_path / "toy_plugin.py").write_text(textwrap.dedent('''
        from edgecompress.methods import Method
        METHOD = Method(name="toy-plugin", summary="Toy plugin method", paper="toy_plugin",
                        select=lambda inputs, k: (inputs.features[:, :k], None))
    '''))
    info = tmp_path / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgecompress.methods]\ntoy-plugin = toy_plugin:METHOD\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "edgecompress.cli", "list", "methods"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "toy-plugin" in result.stdout and "Toy plugin method" in result.stdout
    (info / "entry_points.txt").write_text("[edgecompress.methods]\ntoy-plugin = toy_plugin:MISSING\n")
    broken = subprocess.run([sys.executable, "-m", "edgecompress.cli", "list", "methods"], capture_output=True, text=True, env=env)
    assert broken.returncode == 2 and "the method plugin 'toy-plugin' (toy_plugin:MISSING) failed to load" in broken.stderr
