"""HiRED's per-partition budget (LLaVA-NeXT) as tensor math, and its lowering to one constant-K
selection, in PyTorch and as an exported, verified ONNX graph in ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgecompress.graph.export import export_onnx, load_graph
from edgecompress.graph.spec import GraphSpec, TensorSpec
from edgecompress.lowering.verifier import verify_graph
from edgecompress.selection.partitions import largest_remainder, quota_select
from tests.authors_hired import authors_masks, partition_budget, tile_quotas

N = 576
GRIDS = [(1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]  # llava-v1.6 pinpoints: 336x672, 672x336, 672x672, 336x1008, 1008x336


def test_partition_budget_worked_examples():
    # 2x2 grid at 20%: P = 5 partitions; total = floor(5*576*0.2) = 576; base 288; tiles 288.
    assert partition_budget(4, N, 0.2, 0.5) == (576, 288, 288)
    # 1x3 grid at 20%: P = 4; total = floor(4*576*0.2) = 460; base 230; tiles 230.
    assert partition_budget(3, N, 0.2, 0.5) == (460, 230, 230)
    # 100%: the base is capped at N, the tiles get all of theirs.
    assert partition_budget(4, N, 1.0, 0.5) == (2880, 576, 2304)


@pytest.mark.parametrize("weights, total, cap, expected", [
    ([3, 1, 1], 7, 4, [4, 2, 1]),       # floors 4,1,1; the one left goes to the larger remainder (ties: lower index)
    ([1, 1, 1], 7, 4, [3, 2, 2]),
    ([5, 1, 0], 8, 4, [4, 4, 0]),       # the first share is capped, its excess goes to the others in proportion
    ([10, 0, 0, 0], 2304, 576, [576] * 4),
    ([0, 0, 0], 5, 4, [2, 2, 1]),       # no information: equal shares
])
def test_largest_remainder(weights, total, cap, expected):
    assert largest_remainder(torch.tensor(weights, dtype=torch.float32), total, cap).tolist() == expected


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.5, 1.0])
def test_grid_quotas_sum_exactly_to_the_tile_budget(grid, rate):
    tiles = grid[0] * grid[1]
    budget = partition_budget(tiles, N, rate, 0.5)
    for seed in range(5):
        base_layer0 = torch.rand(N, generator=torch.Generator().manual_seed(seed)) ** 4
        quotas = tile_quotas(base_layer0, grid, N, 0.5, budget.sub_total)
        assert int(quotas.sum()) == budget.sub_total and int(quotas.max()) <= N and int(quotas.min()) >= 0


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_authors_mode_reproduces_the_authors_selection(grid, rate):
    tiles = grid[0] * grid[1]
    gen = torch.Generator().manual_seed(tiles * 100 + int(rate * 100))
    layer0, layer22 = torch.rand(tiles + 1, N, generator=gen), torch.rand(tiles + 1, N, generator=gen)
    expected = authors_masks(layer0[0], layer22, grid, rate, 0.5)

    budget = partition_budget(tiles, N, rate, 0.5)
    quotas = tile_quotas(layer0[0], grid, N, 0.5, budget.sub_total, mode="authors")
    ours = torch.zeros(tiles + 1, N, dtype=torch.bool)
    ours[0, torch.topk(layer22[0], budget.base_k).indices] = True
    kept = quota_select(layer22[1:], quotas, int(quotas.sum()))
    ours[1:].view(-1)[kept] = True
    assert torch.equal(ours, expected)
    assert int(quotas.sum()) <= budget.sub_total  # flooring may fall short: why `grid` is the default


def test_quota_select_is_per_partition_top_k_in_order():
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(4, N, generator=gen)
    quotas = torch.tensor([0, 100, 576, 31])
    kept = quota_select(scores, quotas, int(quotas.sum()))
    assert kept.shape == (707,) and torch.equal(kept, torch.sort(kept).values)
    expected = sorted(g * N + int(i) for g in range(4) for i in torch.topk(scores[g], int(quotas[g])).indices)
    assert kept.tolist() == expected
    assert [int(((kept >= g * N) & (kept < (g + 1) * N)).sum()) for g in range(4)] == quotas.tolist()


class GridSelection(torch.nn.Module):
    """Layer-0 base scores and layer-22 tile scores in; the kept tile positions out (constant K)."""

    def __init__(self, grid, sub_total):
        super().__init__()
        self.grid, self.sub_total = grid, sub_total

    def forward(self, base_layer0, tile_scores):
        quotas = tile_quotas(base_layer0, self.grid, N, 0.5, self.sub_total)
        return quota_select(tile_scores, quotas, self.sub_total), quotas


@pytest.mark.parametrize("grid", [(2, 2), (1, 3)])
def test_lowered_selection_exports_verifies_and_matches_onnxruntime(tmp_path, grid):
    tiles = grid[0] * grid[1]
    budget = partition_budget(tiles, N, 0.2, 0.5)
    module = GridSelection(grid, budget.sub_total)
    spec = GraphSpec(
        name="tile-selection",
        inputs=(TensorSpec("base_layer0", (N,), "float32"), TensorSpec("tile_scores", (tiles, N), "float32")),
        outputs=(TensorSpec("kept", (budget.sub_total,), "int64"), TensorSpec("quotas", (tiles,), "int64")),
    )
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(N, generator=gen), torch.rand(tiles, N, generator=gen))
    files = export_onnx(module, example, spec, tmp_path / "select.onnx")
    report = verify_graph(load_graph(tmp_path / files[0]), spec)
    assert report.ok, report.findings
    assert report.op_census["NonZero"] == 0 and report.op_census["TopK"] >= 2
    session = ort.InferenceSession(str(tmp_path / files[0]), providers=["CPUExecutionProvider"])
    for seed in range(6):
        gen = torch.Generator().manual_seed(100 + seed)
        # skewed layer-0 scores: the allocation must really follow them
        base, scores = torch.rand(N, generator=gen) ** (1 + seed), torch.rand(tiles, N, generator=gen)
        kept, quotas = session.run(None, {"base_layer0": base.numpy(), "tile_scores": scores.numpy()})
        with torch.no_grad():
            ref_kept, ref_quotas = module(base, scores)
        np.testing.assert_array_equal(quotas, ref_quotas.numpy())
        np.testing.assert_array_equal(kept, ref_kept.numpy())
        assert int(quotas.sum()) == budget.sub_total == len(kept)
