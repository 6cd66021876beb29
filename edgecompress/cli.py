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
        self._status = console.status(f"{description}...")
        self._status.start()

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


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


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
        "  edgecompress export tiny-llava --method none --precision fp32 --out out/baseline"
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
):
    """Export MODEL with a fixed visual-token budget into a verified bundle: the vision graph (pixels -> K image
    embeddings), the decoder graph with its KV cache, token embeddings and tokenizer."""
    from edgecompress.compiler import export_bundle

    _quiet_libraries()
    bundle = export_bundle(
        model, budget=budget, method=method, precision=precision, out=out, force=force,
        random_weights=random_weights, vision_only=vision_only, steps=RichSteps(),
    )
    out_console.print(f"Bundle written to [bold]{bundle}[/bold]")


@app.command(
    epilog=(
        "[b]Examples[/b]\n\n"
        "  edgecompress run out/tiny-llava-hired-b20 --image photo.jpg --prompt \"What is in the picture?\"\n\n"
        "  edgecompress run out/tiny-llava-hired-b20 --image photo.jpg --prompt \"Describe it.\" --max-new-tokens 128\n\n"
        "  edgecompress run out/llava-1.5-7b-hired-b20 --image cat.jpg --prompt \"What is this?\" --backend onnxruntime-cuda"
    )
)
def run(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    image: Path = typer.Option(..., "--image", "-i", help="The image file (PNG, JPEG, ...)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The question or instruction about the image."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Stop after this many generated tokens."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (CPU), onnxruntime-cuda (needs onnxruntime-gpu)."),
    stats: bool = typer.Option(False, "--stats", help="Print timings (time to first token, decode tokens/s) after the answer."),
):
    """Answer a prompt about an image with a bundle (greedy decoding), streaming the answer to stdout."""
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundle, backend=backend)
    result = pipe.generate_full(
        image, prompt, max_new_tokens=max_new_tokens, on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush())
    )
    sys.stdout.write("\n")
    if stats:
        t = result.timings
        rate = t["decode_tokens"] / t["decode_s"] if t["decode_s"] > 0 else float("nan")
        console.print(
            f"[dim]{result.prompt_tokens} prompt tokens ({pipe.k} image), {len(result.token_ids)} generated "
            f"(stopped by {result.stopped_by}); time to first token {t['ttft_s'] * 1000:.0f} ms, decode {rate:.1f} tokens/s[/dim]"
        )


@app.command(
    epilog="[b]Examples[/b]\n\n  edgecompress inspect out/tiny-llava-hired-b20\n\n  edgecompress inspect out/tiny-llava-hired-b20 --json"
)
def inspect(
    bundle: Path = typer.Argument(..., help="A bundle folder written by `edgecompress export`."),
    as_json: bool = typer.Option(False, "--json", help="Print the inspection as JSON."),
):
    """Show what a bundle holds: model, method, budget, graphs, the verifier's verdict and op census, file integrity."""
    from edgecompress.inspection import inspect_bundle, render_inspection

    result = inspect_bundle(bundle)
    if as_json:
        import json

        out_console.print_json(json.dumps(result))
    else:
        render_inspection(result, out_console)
    if not result["ok"]:
        raise typer.Exit(1)


class ListWhat(str, Enum):
    models = "models"
    methods = "methods"


@app.command(name="list", epilog="[b]Examples[/b]\n\n  edgecompress list models\n\n  edgecompress list methods")
def list_(what: ListWhat = typer.Argument(..., help="What to list: models or methods.")):
    """List the built-in model recipes or the token-selection methods."""
    table = Table(show_edge=False, pad_edge=False)
    if what is ListWhat.models:
        from edgecompress.recipes import builtin_recipes

        for col in ("recipe", "aliases", "source", "defaults", "description"):
            table.add_column(col)
        for r in builtin_recipes().values():
            d = r.defaults
            table.add_row(r.name, ", ".join(r.aliases), r.source, f"{d.get('method')} {d.get('budget')} {d.get('precision')}", r.description)
    else:
        from edgecompress.selection.methods import METHODS

        for col in ("method", "what it keeps", "reference"):
            table.add_column(col)
        for m in METHODS.values():
            table.add_row(m.name, m.summary, m.reference)
    out_console.print(table)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code instead of raising
        sys.exit(code if isinstance(code, int) else 0)
    except EdgeCompressError as err:
        console.print(f"[bold red]error:[/bold red] {err}")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: nothing was written")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as err:  # click's usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
