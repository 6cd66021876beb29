"""edgecompress: compile vision-language models with a fixed visual-token budget into static
ONNX graphs and TensorRT engines.

The library API (the CLI is a thin skin over it)::

    from edgecompress import export_bundle
    bundle = export_bundle("tiny-llava", budget="20%")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "export_bundle", "EdgeCompressError"]

from edgecompress.errors import EdgeCompressError


def __getattr__(name):  # keep `import edgecompress` light: torch loads only when exporting
    if name == "export_bundle":
        from edgecompress.compiler import export_bundle

        return export_bundle
    raise AttributeError(name)
