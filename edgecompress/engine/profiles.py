"""Target profiles: one TOML per device (the top-level ``profiles/`` folder, shipped in the wheel).

A profile says *where* a bundle runs: backend, compute capability, memory (and whether it is
shared with the CPU, as on Jetson), precision, builder workspace, and the prompt/output token
limits that fix the decoder's optimization profile and KV-cache size. A user may pass a path
to their own ``.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass

from edgecompress.errors import EdgeCompressError
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
_REQUIRED = _FIELDS - {"dla_cores"}


def _profile_from_toml(data: dict, path: str) -> Profile:
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise EdgeCompressError(f"profile {path} lacks {', '.join(missing)}", hint="See profiles/rtx-4090.toml for the format.")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise EdgeCompressError(f"profile {path} has unknown keys: {', '.join(unknown)}")
    if data["backend"] not in BACKENDS:
        raise EdgeCompressError(f"profile {path}: backend {data['backend']!r} is not one of {', '.join(BACKENDS)}")
    if data["precision"] not in ("fp16", "fp32"):
        raise EdgeCompressError(f"profile {path}: precision {data['precision']!r} is not fp16 or fp32")
    return Profile(**data, path=path)


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
