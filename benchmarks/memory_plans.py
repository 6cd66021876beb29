"""The memory plan of a model on several devices at several budgets, as a Markdown table.

    python benchmarks/memory_plans.py                      # llava-1.5-7b fp16 on three devices, 100% and 20%
    python benchmarks/memory_plans.py --model llava-1.5-13b --profiles rtx-5090,a100-80gb
    python benchmarks/memory_plans.py --model llava-next           # K against base + 4 tiles; 100% = packed tokens

Computed from the recipe's architecture (no download, no export): see edgecompress/engine/memory.py
for the formula.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llava-1.5-7b")
    parser.add_argument("--profiles", default="jetson-orin-nano-8gb,jetson-agx-orin-64gb,rtx-4090")
    parser.add_argument("--budgets", default="100%,20%")
    parser.add_argument("--precision", default="fp16")
    args = parser.parse_args()

    from edgecompress.engine.memory import GIB, image_tokens_at, parameter_counts, plan_memory
    from edgecompress.engine.profiles import load_profile
    from edgecompress.recipes import resolve_model

    config = resolve_model(args.model).recipe.config
    counts = parameter_counts(config)
    print(f"\n{args.model}, {args.precision}; GiB\n")
    print("| profile | budget | K | context | weights | embedding table | KV cache | activations (est.) | workspace | reserved | total | capacity | fits |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.profiles.split(","):
        profile = load_profile(name)
        for budget in args.budgets.split(","):
            k = image_tokens_at(config, budget)  # LLaVA-NeXT: against the largest grid; 100% = its own packing
            plan = plan_memory(config, k, profile, args.precision, counts=counts)
            r = {key: value / GIB for key, value in plan.rows.items()}
            weights = r["weights (vision)"] + r["weights (decoder)"]
            print(f"| {name} | {budget} | {k} | {plan.context} | {weights:.2f} | {r.get('embedding table', 0):.2f} | "
                  f"{r['KV cache']:.2f} | {r['activations (est.)']:.2f} | {r['builder workspace']:.2f} | {r['reserved']:.2f} | "
                  f"{plan.total / GIB:.2f} | {plan.capacity / GIB:.0f} | {'yes' if plan.fits else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
