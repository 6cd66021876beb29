"""edgecompress-runtime: run an edgecompress bundle with ONNX Runtime. No torch, no transformers.

    from edgecompress_runtime import Pipeline
    pipe = Pipeline.load("out/tiny-llava-hired-b20")
    print(pipe.generate("photo.jpg", "What is in the picture?", max_new_tokens=64))
"""

from edgecompress_runtime.bundle import open_bundle, read_manifest, verify_files
from edgecompress_runtime.errors import EdgeCompressError
from edgecompress_runtime.manifest import Manifest
from edgecompress_runtime.pipeline import Generation, Pipeline
from edgecompress_runtime.preprocess import preprocess

__version__ = "0.1.0"
__all__ = ["Pipeline", "Generation", "EdgeCompressError", "Manifest", "open_bundle", "read_manifest", "verify_files",
           "preprocess"]
