"""Bench reports: the JSON (the schema in the README), a Markdown table per bundle, and for
several bundles one side-by-side table and a PNG of the stage latencies stacked per bundle."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from edgecompress.bundle import write_json

STAGE_NAMES = {"preprocess": "preprocess", "vision": "vision", "prefill": "prefill", "ttft": "TTFT",
               "decode_per_token": "decode / token", "end_to_end": "end to end"}


def _stem(folder: Path, kind: str) -> str:
    """<kind>-<UTC timestamp>[-n]: unique even for runs started within the same second."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{kind}-{stamp}", 1
    while any((folder / f"{candidate}{ext}").exists() for ext in (".json", ".md", ".png")):
        n += 1
        candidate = f"{kind}-{stamp}-{n}"
    return candidate


def write_report(reports: Path, report: dict[str, Any]) -> Path:
    """bench-<timestamp>.json and .md in the bundle's reports folder; returns the JSON's path."""
    reports.mkdir(exist_ok=True)
    stem = _stem(reports, "bench")
    write_json(reports / f"{stem}.json", report)
    (reports / f"{stem}.md").write_text(markdown(report) + "\n", encoding="utf-8")
    return reports / f"{stem}.json"


def where(machine: dict[str, Any]) -> str:
    """The device a report ran on, in words: the board (a Jetson), else the GPU, else the CPU."""
    return machine.get("board") or machine.get("gpu") or machine["cpu"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def describe(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    return (f"{Path(report['bundle']).name}: {report['method']}, K={report['image_tokens']} of {report['n']}, "
            f"{report['precision']}, on {report['backend']} ({where(m)}, {m['cores']} cores); {s['runs']} runs after "
            f"{s['warmup']} warm-up, prompt {s['prompt_tokens']} text tokens + {report['image_tokens']} image tokens, "
            f"{s['new_tokens']} new tokens, image {s['width']}x{s['height']} (seed {s['seed']})"
            + (" [interrupted: the runs completed]" if report.get("interrupted") else ""))


def markdown(report: dict[str, Any]) -> str:
    predicted = report.get("predicted") or {}
    ratio = report.get("measured_over_predicted") or {}
    lines = [describe(report), "",
             "| stage | p50 ms | p90 ms | mean ms | min ms | runs | predicted ms | measured / predicted |",
             "|---|---|---|---|---|---|---|---|"]
    for stage, name in STAGE_NAMES.items():
        st = report["stages"][stage]
        lines.append(f"| {name} | {_ms(st['p50_ms'])} | {_ms(st['p90_ms'])} | {_ms(st['mean_ms'])} | {_ms(st['min_ms'])} | "
                     f"{st['runs']} | {_ms(predicted.get(stage))} | "
                     + (f"{ratio[stage]:.1f}x |" if stage in ratio else "- |"))
    tp, mem = report["throughput"], report["memory"]
    lines += ["", f"decode {tp['decode_tokens_per_s'] or 0:.1f} tokens/s; end to end {tp['end_to_end_tokens_per_s'] or 0:.1f} "
                  f"tokens/s; host peak RSS {mem['host_peak_rss_mib']:.0f} MiB; GPU peak "
                  + (f"{mem['gpu_peak_mib']:.0f} MiB" if mem.get("gpu_peak_mib") is not None
                     else f"- ({mem.get('gpu_note', 'no GPU')})")]
    if report.get("predicted_basis"):
        b = report["predicted_basis"]
        lines.append(f"predicted on {b['profile']}: {b['peak_fp16_tflops']} fp16 TFLOP/s, {b['memory_bandwidth_gbs']} GB/s; "
                     f"vision {b['vision_gflop']:.2f} GFLOP, prefill {b['prefill_gflop']:.2f} GFLOP, decode reads "
                     f"{b['decoder_weight_mib']:.1f} MiB weights + {b['kv_mib_at_mean_context']:.2f} MiB KV a token"
                     + (f" ({b['note']})" if b.get("note") else ""))
    j = report.get("jetson")
    if j:
        rails = ", ".join(f"{rail} {mw:.0f} mW" for rail, mw in (j.get("power_mean_mw") or {}).items())
        total = j.get("total_power_mean_mw")
        energy = j.get("energy_per_token_mj")
        lines.append(f"power ({j['samples']} tegrastats samples): {rails}; total "
                     + (f"{total:.0f} mW ({j['total_rule']})" if total is not None else "-")
                     + (f"; {energy:.1f} mJ per generated token" if energy is not None else "")
                     + (f"; RAM peak {j['ram_peak_mib']:.0f} MiB" if j.get("ram_peak_mib") is not None else "")
                     + (f"; GPU load {j['gpu_util_mean_pct']:.0f}%" if j.get("gpu_util_mean_pct") is not None else "")
                     + f"; nvpmodel {j.get('nvpmodel') or '-'}, jetson_clocks "
                     + {True: "on", False: "off", None: "unknown"}[j.get("jetson_clocks")])
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def side_by_side(reports: list[dict[str, Any]]) -> str:
    """One row per bundle: p50 of every stage, throughput and memory."""
    first = reports[0]
    lines = [f"{first['backend']} on {where(first['machine'])} "
             f"({first['machine']['cores']} cores); p50 of {first['settings']['runs']} runs; prompt "
             f"{first['settings']['prompt_tokens']} text tokens, {first['settings']['new_tokens']} new tokens", "",
             "| bundle | method | budget | K | precision | " + " | ".join(f"{n} ms" for n in STAGE_NAMES.values())
             + " | decode tok/s | host RSS MiB | TTFT measured / predicted |",
             "|---|---|---|---|---|" + "---|" * len(STAGE_NAMES) + "---|---|---|"]
    for r in reports:
        ratio = (r.get("measured_over_predicted") or {}).get("ttft")
        lines.append(f"| {Path(r['bundle']).name} | {r['method']} | {r['budget']} | {r['image_tokens']} | {r['precision']} | "
                     + " | ".join(_ms(r["stages"][s]["p50_ms"]) for s in STAGE_NAMES)
                     + f" | {r['throughput']['decode_tokens_per_s'] or 0:.1f} | {r['memory']['host_peak_rss_mib']:.0f} | "
                     + (f"{ratio:.1f}x |" if ratio else "- |"))
    return "\n".join(lines)


SEGMENTS = (("preprocess", (148, 103, 189)), ("vision", (214, 39, 40)), ("prefill", (31, 119, 180)),
            ("decode", (44, 160, 44)))


def plot_stages(reports: list[dict[str, Any]], path: Path, title: str) -> None:
    """A bar per bundle, its p50 stage latencies stacked (preprocess, vision, prefill, the decode
    of the rest of the tokens), drawn with PIL."""
    from PIL import Image, ImageDraw

    bars = []
    for r in reports:
        st = r["stages"]
        decode = (st["decode_per_token"]["p50_ms"] or 0) * max(r["settings"]["new_tokens"] - 1, 0)
        bars.append((f"{r['method']} {r['budget']} (K={r['image_tokens']})",
                     [st["preprocess"]["p50_ms"], st["vision"]["p50_ms"], st["prefill"]["p50_ms"], decode]))
    width, height, left, right, top, bottom = 120 + 110 * len(bars) + 160, 460, 70, 170, 40, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    peak = max(sum(v or 0 for v in values) for _, values in bars) * 1.1 or 1.0
    draw.text((left, 12), title, fill="black")
    for i in range(6):  # grid
        value = peak * i / 5
        y = y0 - (y0 - y1) * i / 5
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"{value:.0f} ms" if peak >= 10 else f"{value:.1f} ms", fill="black")
    slot = (x1 - x0) / len(bars)
    for b, (label, values) in enumerate(bars):
        bx0, bx1 = x0 + slot * b + slot * 0.2, x0 + slot * (b + 1) - slot * 0.2
        y = y0
        for (_, colour), value in zip(SEGMENTS, values):
            h = (y0 - y1) * (value or 0) / peak
            draw.rectangle((bx0, y - h, bx1, y), fill=colour)
            y -= h
        draw.text((bx0 - 10, y0 + 8), label, fill="black")
        draw.text((bx0, y - 16), _ms(sum(v or 0 for v in values)), fill="black")
    draw.rectangle((x0, y1, x1, y0), outline="black")
    for row, (name, colour) in enumerate(reversed(SEGMENTS)):
        ly = top + 20 + row * 22
        draw.rectangle((x1 + 16, ly - 6, x1 + 36, ly + 6), fill=colour)
        draw.text((x1 + 44, ly - 6), name, fill="black")
    image.save(path)


def write_comparison(folder: Path, reports: list[dict[str, Any]]) -> tuple[Path, Path, Path]:
    """bench-<timestamp>.{json,md,png} in ``folder``: every report, the table, the plot."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(folder, "bench")
    table = side_by_side(reports)
    write_json(folder / f"{stem}.json", {"reports": reports})
    (folder / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
    plot_stages(reports, folder / f"{stem}.png", f"{reports[0]['model']}: p50 latency per stage ({reports[0]['backend']})")
    return folder / f"{stem}.json", folder / f"{stem}.md", folder / f"{stem}.png"
