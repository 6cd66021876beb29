"""Target profiles: one TOML per device (the top-level ``profiles/`` folder, shipped in the wheel).

A profile says *where* a bundle runs: backend, compute capability, memory (and whether it is
shared with the CPU, as on Jetson), precision, builder workspace, and the prompt/output token
limits that fix the decoder's optimization profile and KV-cache size. A user may pass a path
to their own ``.toml``.

Two optional fields feed ``edgecompress bench``'s predicted column (vision and prefill bound by
compute, decode by memory bandwidth): ``peak_fp16_tflops``, the dense FP16 Tensor-Core rate that
TensorRT's GEMMs can reach (FP32-accumulate on GeForce cards), and ``memory_bandwidth_gbs``, peak
DRAM bandwidth. A profile without them (``cpu``) gets no prediction.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass

from edgecompress.errors import EdgeCompressError
from edgecompress.fields import Fields
from edgecompress.recipes import data_dir, read_toml

BACKENDS = ("tensorrt", "tensorrt-rtx", "onnxruntime")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    backend: str
    compute_capability: str  # "8.7"; empty for onnxruntime
    memory_gib: float
    shared_memory: bool
    reserved_gib: float
    precision: str
    workspace_gib: float
    max_prompt_tokens: int
    max_output_tokens: int
    dla_cores: int = 0
    peak_fp16_tflops: float | None = None  # dense FP16 Tensor-Core TFLOP/s; None: bench predicts nothing
    memory_bandwidth_gbs: float | None = None  # peak DRAM GB/s; None: bench predicts nothing
    path: str | None = None

    @property
    def builds_engines(self) -> bool:
        return self.backend in ("tensorrt", "tensorrt-rtx")

    @property
    def sm(self) -> str:
        """'8.9' -> 'SM89', as TensorRT-RTX names its targets."""
        major, minor = self.compute_capability.split(".")
        return f"SM{major}{minor}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("path")
        return data


_FIELDS = {f for f in Profile.__dataclass_fields__ if f != "path"}
_OPTIONAL = {"dla_cores", "peak_fp16_tflops", "memory_bandwidth_gbs"}
_REQUIRED = _FIELDS - _OPTIONAL
_CAPABILITY = re.compile(r"^\d+\.\d+$")


def _profile_from_toml(data: dict, path: str) -> Profile:
    """A profile from its TOML table; every field checked (type, range, finiteness)."""
    fields = Fields(data, f"profile {path}")
    fields.require(_REQUIRED)
    fields.only(_FIELDS)
    backend = fields.choice("backend", BACKENDS)
    builds = backend != "onnxruntime"
    capability = fields.text("compute_capability", pattern=_CAPABILITY if builds else re.compile(r"^(\d+\.\d+)?$"),
                             allowed='it must be "major.minor", e.g. "8.7"' + ("" if builds else ', or "" for onnxruntime'))
    memory = fields.number("memory_gib", minimum=0, exclusive=True)
    return Profile(
        name=fields.name("name"),
        description=fields.text("description"),
        backend=backend,
        compute_capability=capability,
        memory_gib=memory,
        shared_memory=fields.boolean("shared_memory"),
        reserved_gib=fields.number("reserved_gib", minimum=0, maximum=memory),
        precision=fields.choice("precision", ("fp16", "fp32")),
        workspace_gib=fields.number("workspace_gib", minimum=0, maximum=memory),
        max_prompt_tokens=fields.number("max_prompt_tokens", minimum=1, integer=True),
        max_output_tokens=fields.number("max_output_tokens", minimum=1, integer=True),
        dla_cores=fields.number("dla_cores", 0, minimum=0, integer=True),
        peak_fp16_tflops=fields.number("peak_fp16_tflops", None, minimum=0, exclusive=True),
        memory_bandwidth_gbs=fields.number("memory_bandwidth_gbs", None, minimum=0, exclusive=True),
        path=path,
    )


def builtin_profiles() -> dict[str, Profile]:
    profiles = {}
    for entry in sorted(data_dir("profiles", "edgecompress.profiles_data").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            profile = _profile_from_toml(tomllib.loads(entry.read_text(encoding="utf-8")), f"profiles/{entry.name}")
            profiles[profile.name] = profile
    return profiles


def load_profile(name_or_path: str) -> Profile:
    if name_or_path.endswith(".toml"):
        return _profile_from_toml(read_toml(name_or_path, "profile"), name_or_path)
    profiles = builtin_profiles()
    if name_or_path not in profiles:
        raise EdgeCompressError(
            f"unknown profile {name_or_path!r}",
            hint=f"Known profiles: {', '.join(profiles)} (edgecompress list profiles), or a path to your own .toml.",
        )
    return profiles[name_or_path]
