"""`edgecompress inspect`: what a bundle holds and whether it is intact and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompress.bundle import read_manifest, sha256_file, verify_files
from edgecompress.errors import EdgeCompressError
from edgecompress_runtime.bundle import containment_problems, external_data_problems, inside
from edgecompress_runtime.manifest import Manifest


def inspect_bundle(bundle: Path, profile: str | None = None) -> dict[str, Any]:
    """Re-check a bundle: file hashes against the manifest, and the verifier on every graph."""
    from edgecompress.graph.export import load_graph
    from edgecompress.graph.spec import GraphSpec, TensorSpec
    from edgecompress.lowering.verifier import verify_graph

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    escapes = containment_problems(bundle, manifest)
    # A bundle that points outside itself is reported, and nothing outside it is read.
    file_problems = escapes or verify_files(bundle, manifest)
    graphs = {}
    for name, graph in manifest.graphs.items():
        spec = GraphSpec(
            name=graph.name,
            inputs=tuple(TensorSpec(t.name, t.shape, t.dtype) for t in graph.inputs),
            outputs=tuple(TensorSpec(t.name, t.shape, t.dtype) for t in graph.outputs),
            dynamic_axes=graph.dynamic_axes,
        )
        entry = manifest.data["graphs"][name]  # shown as written
        try:
            path = inside(bundle, graph.file)
            if not path.exists():
                raise EdgeCompressError(f"{graph.file} is missing")
            outside = external_data_problems(bundle, path)
            if outside:
                raise EdgeCompressError("; ".join(outside))
            graphs[name] = {"spec": entry, "verify": verify_graph(load_graph(path), spec).to_dict()}
        except EdgeCompressError as err:
            failed = {"ok": False, "checks": [], "findings": [{"check": "file", "message": str(err)}], "op_census": {}}
            graphs[name] = {"spec": entry, "verify": failed}
    engines = {} if escapes else engine_status(bundle, manifest)
    ok = (not file_problems and all(g["verify"]["ok"] for g in graphs.values())
          and all(state != "modified" for graphs_ in engines.values() for state in graphs_.values()))
    result = {"bundle": str(bundle), "ok": ok, "manifest": manifest.data, "file_problems": file_problems, "graphs": graphs,
              "engines": engines}
    if profile is not None:
        from edgecompress.engine.memory import bundle_plan
        from edgecompress.engine.profiles import load_profile

        plan = bundle_plan(manifest, load_profile(profile))
        result["memory_plan"] = plan.to_dict()
        result["memory_plan_text"] = plan.table()
    return result


def engine_status(bundle: Path, manifest: Manifest) -> dict[str, dict[str, str]]:
    """Each built engine: "intact", "missing" (a bundle copied without engines/ still runs in ONNX
    Runtime) or "modified" (its sha256 differs from the engine table: a failure)."""
    status = {}
    for profile, record in manifest.engines.items():
        status[profile] = {}
        for graph, entry in record.graphs.items():
            path = inside(bundle, entry.file)
            status[profile][graph] = ("missing" if not path.is_file()
                                      else "intact" if sha256_file(path) == entry.sha256 else "modified")
    return status


def render_inspection(result: dict[str, Any], console) -> None:
    from rich.table import Table

    m = result["manifest"]
    b = m["budget"]
    console.print(f"[bold]{result['bundle']}[/bold]")
    console.print(f"  model      {m['recipe']['name']} ({m['model']['family']}; source {m['source']['location']}"
                  + (", random weights" if m.get("random_weights") else "") + ")")
    console.print(f"  method     {m['method']}")
    console.print(f"  budget     {b['spec']} -> K = {m['k']} of N = {m['n']} visual tokens  [dim]({b['rule']})[/dim]")
    if m.get("anyres"):
        a, d = m["anyres"], m.get("method_details", {})
        grids = ", ".join(f"{h}x{w}" for h, w in a["grids"])
        console.print(f"  anyres     base + up to {a['max_tiles']} tiles of {a['tile_size']} px (grids {grids}); "
                      f"packing {m['packing']['kind']}")
        if "base_k" in d:
            console.print(f"  split      base {d['base_k']} + tiles {d['sub_total']} (alpha {d['alpha']}, "
                          f"{d['allocation']} allocation), the same for every grid")
    console.print(f"  precision  {m['precision']}")
    if m.get("weights"):
        w = m["weights"]
        check = w.get("logit_check") or {}
        console.print(f"  weights    {w['format']} (group {w['group_size']}, symmetric, {w['algorithm']}) in "
                      f"{w['layers']} linear layers of the language model; logit cosine with the float graph "
                      f"{check.get('cosine_min', float('nan')):.5f} (at least {check.get('threshold', '-')})")
    console.print(f"  created    {m['created']} by edgecompress {m['tool_versions']['edgecompress']}")
    files_ok = not result["file_problems"]
    console.print(f"  files      {len(m['files'])} " + ("[green]intact (sha256 match)[/green]" if files_ok else "[red]PROBLEMS[/red]"))
    for problem in result["file_problems"]:
        console.print(f"    [red]- {problem}[/red]")
    for name, g in result["graphs"].items():
        spec, verdict = g["spec"], g["verify"]
        console.print(f"\n[bold]graph {name}[/bold] ({spec['file']})")
        for kind in ("inputs", "outputs"):
            for t in spec[kind]:
                console.print(f"  {kind[:-1]:6}  {t['name']:14} {t['dtype']:8} {t['shape']}")
        status = "[green]PASS[/green]" if verdict["ok"] else "[red]FAIL[/red]"
        console.print(f"  verifier {status}  ({', '.join(verdict.get('checks', []))})")
        for f in verdict["findings"]:
            console.print(f"    [red]- [{f['check']}] {f['message']}[/red]")
        census = Table(show_edge=False, pad_edge=False, box=None)
        census.add_column("op", style="dim")
        census.add_column("count", justify="right")
        for op, count in sorted(verdict["op_census"].items(), key=lambda kv: (-kv[1], kv[0])):
            census.add_row(op, str(count))
        console.print("  op census:")
        console.print(census)
    for name, record in m.get("engines", {}).items():
        console.print(f"\n[bold]engines {name}[/bold] ({record['backend']} {record['builder_version']}, compute capability "
                      f"{record['compute_capability']}, {record['precision']})")
        for graph, entry in record["graphs"].items():
            state = result.get("engines", {}).get(name, {}).get(graph, "")
            shown = {"intact": "[green]intact[/green]", "missing": "[yellow]missing[/yellow] (ONNX Runtime still runs)",
                     "modified": "[red]does not match its sha256[/red]"}.get(state, state)
            console.print(f"  {graph:8} {entry['file']}  ({len(entry['optimization_profiles'])} optimization profiles)  {shown}")
    if "memory_plan_text" in result:
        console.print()
        console.print(result["memory_plan_text"])
