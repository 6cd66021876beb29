"""Export a PyTorch module to a clean ONNX file with torch.onnx (dynamo).

Dynamo gives fully static shapes for a fixed-budget graph. Weights always go to an external
``<name>.onnx.data`` file: the graph stays a small protobuf (never near its 2 GB limit), and
neither saving nor checking it ever holds a serialised copy of the weights in memory (which
would double an export's peak memory).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx

from edgecompress.errors import EdgeCompressError
from edgecompress.graph.spec import GraphSpec

@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints a page of progress and warnings per export; keep the CLI readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(module, example_inputs: tuple, spec: GraphSpec, path: Path, dynamic_shapes=None) -> list[str]:
    """Export ``module`` to ``path``; returns the files written (the .onnx and any external data)."""
    import torch

    import gc

    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                example_inputs,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # torch.export raises many types; all mean the same to a user
        raise EdgeCompressError(
            f"torch.onnx could not export the {spec.name} graph: {type(err).__name__}: {str(err).splitlines()[0]}",
            hint="This is a bug in edgecompress or an unsupported model variant; please report it with the command you ran.",
        ) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_exporter():
        program.save(str(path), external_data=True)
    del program
    gc.collect()
    files = [path.name]
    data_file = path.with_name(path.name + ".data")
    if data_file.exists():
        files.append(data_file.name)
    onnx.checker.check_model(str(path), full_check=True)
    return files


def load_graph(path: Path) -> onnx.ModelProto:
    """Load a graph's structure (without external weights, which the checks never read)."""
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as err:
        raise EdgeCompressError(f"{path} is not a readable ONNX file ({err})", hint="Re-export the bundle.") from None
