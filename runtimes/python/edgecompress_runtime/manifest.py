"""The manifest, typed: the one contract between the compiler and the runtimes.

The compiler writes ``manifest.json``; everything that reads it (the runtimes, ``inspect``,
``build``, ``validate``) reads it through :class:`Manifest`, which checks the schema version
and the type of every field it exposes, and names the field when one is wrong. Fields the
readers do not need stay in :attr:`Manifest.data`, the JSON as written, so a manifest round-trips
unchanged (``build`` adds an ``engines`` entry and writes it back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecompress_runtime.errors import EdgeCompressError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class _Reader:
    """Typed access to one table of the manifest, naming the field in every error."""

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise _malformed(source, where, "a table")
        self.data, self.where, self.source = data, where, source

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False, what: str = "") -> Any:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _malformed(self.source, self.key(name), what or _describe(kind))
        return value

    def table(self, name: str, *, optional: bool = False) -> "_Reader | None":
        value = self.data.get(name)
        if value is None and optional:
            return None
        return _Reader(value, self.key(name), self.source)


def _describe(kind) -> str:
    names = {int: "an integer", str: "a string", dict: "a table", list: "a list", bool: "true or false", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _malformed(source: str, key: str, expected: str) -> EdgeCompressError:
    return EdgeCompressError(f"{source}: manifest field {key} is missing or malformed (expected {expected})",
                             hint="The bundle is damaged or was not written by edgecompress: re-export it.")


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class Graph:
    name: str
    file: str
    files: tuple[str, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    dynamic_axes: dict[str, dict[int, str]]
    # How the graph's KV cache is driven: None, past in and present out (the standard graph);
    # "shared-buffer" (the fused decoder), one buffer per cache tensor of kv_cache_max_length
    # positions bound as both past and present, the valid length in seqlens_k/total_sequence_length.
    kv_cache: str | None = None
    kv_cache_max_length: int = 0

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)


@dataclass(frozen=True)
class LanguageModel:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class DecoderPruning:
    """A method that prunes inside the language model (FastV): the ``prefill`` graph keeps
    ``kept_image_tokens`` of the ``image_tokens`` image tokens at decoder ``layer``; the image
    must start at token ``image_start`` of the prompt (the graph holds that place as a constant)."""

    method: str
    layer: int
    image_start: int
    image_tokens: int
    kept_image_tokens: int


@dataclass(frozen=True)
class EngineGraph:
    file: str
    sha256: str
    optimization_profiles: tuple[dict, ...]


@dataclass(frozen=True)
class Engines:
    """The engines ``build`` made for one profile (their own table: not in ``files``)."""

    backend: str
    builder_version: str
    compute_capability: str
    precision: str
    graphs: dict[str, EngineGraph]


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]  # the JSON as written
    method: str
    precision: str
    k: int
    n: int
    budget_spec: str
    image_token_id: int
    prompt_template: str
    preprocess: dict[str, Any]
    architecture: dict[str, Any]
    graphs: dict[str, Graph]
    files: dict[str, FileEntry]
    engines: dict[str, Engines] = field(default_factory=dict)
    language_model: LanguageModel | None = None  # None: a vision-only bundle
    tokenizer_file: str | None = None  # None: exported without a tokenizer
    embeddings_file: str | None = None
    eos_token_ids: tuple[int, ...] = ()
    max_sequence: int = 0
    anyres: dict[str, Any] | None = None  # LLaVA-NeXT: how the runtime tiles an image
    packing: dict[str, Any] = field(default_factory=dict)  # LLaVA-NeXT: how image tokens are packed
    newline_file: str | None = None  # LLaVA-NeXT unpruned: the image-newline embedding
    random_weights: bool = False
    decoder_pruning: DecoderPruning | None = None  # FastV: the prefill graph prunes at a decoder layer
    # Graphs only ONNX Runtime runs (its contrib ops), each in place of the same-named entry of
    # ``graphs`` (export --decoder-ops onnxruntime: "decoder"); TensorRT and the verifier read ``graphs``.
    onnxruntime_graphs: dict[str, Graph] = field(default_factory=dict)
    # The text of a later user turn, with {prompt}, as the chat template renders it after the
    # previous answer (e.g. "</s>USER: {prompt} ASSISTANT:"); None: the bundle cannot take follow-ups.
    follow_up_template: str | None = None
    # How the language model numbers the prompt: None (0, 1, 2, ...) or {"kind": "mrope", "grid":
    # [rows, cols]} (Qwen2.5-VL: 3 x S positions, image tokens at their grid place; qwen.py)
    positions: dict[str, Any] | None = None

    @property
    def position_shape(self) -> tuple[int, ...]:
        """The shape of one token's position ids: [1, 1], or mRoPE's [3, 1, 1]."""
        return (3, 1, 1) if self.positions is not None else (1, 1)

    @property
    def recipe_name(self) -> str:
        return str(self.data.get("recipe", {}).get("name", "?"))

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.data.get("source", {}))

    @property
    def packs_newlines(self) -> bool:
        return self.packing.get("kind") == "anyres-newline"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest.json") -> "Manifest":
        """Check the schema version, then every field the readers use; one message names the field."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise EdgeCompressError(
                f"{source} has manifest schema version {version!r}; this edgecompress reads version {SCHEMA_VERSION}",
                hint="Re-export the bundle with this version of edgecompress.",
            )
        top = _Reader(data, "", source)
        graphs = {name: _graph(top.table("graphs").table(name)) for name in top.get("graphs", dict)}
        files = {}
        for rel in top.get("files", dict):
            entry = top.table("files").table(rel)
            files[rel] = FileEntry(entry.get("sha256", str), entry.get("bytes", int))
        engines = {}
        for profile in top.get("engines", dict, optional=True) or {}:
            record = top.table("engines").table(profile)
            engine_graphs = {}
            for name in record.get("graphs", dict):
                entry = record.table("graphs").table(name)
                engine_graphs[name] = EngineGraph(entry.get("file", str), entry.get("sha256", str),
                                                  tuple(entry.get("optimization_profiles", list)))
            engines[profile] = Engines(record.get("backend", str), record.get("builder_version", str),
                                       record.get("compute_capability", str), record.get("precision", str), engine_graphs)
        lm = top.table("language_model", optional=True)
        language_model = None if lm is None else LanguageModel(
            lm.get("num_layers", int), lm.get("num_kv_heads", int), lm.get("head_dim", int), lm.get("hidden_size", int),
            lm.get("max_position_embeddings", int))
        tokenizer = top.table("tokenizer", optional=True)
        embeddings = top.table("embeddings", optional=True)
        generation = top.table("generation", optional=True)
        limits = top.table("limits", optional=True)
        packing = top.get("packing", dict, optional=True) or {}
        newline = packing.get("newline") if packing.get("kind") == "anyres-newline" else None
        pruning = top.table("decoder_pruning", optional=True)
        decoder_pruning = None if pruning is None else DecoderPruning(
            pruning.get("method", str), pruning.get("layer", int), pruning.get("image_start", int),
            pruning.get("image_tokens", int), pruning.get("kept_image_tokens", int))
        runtime = top.table("onnxruntime_graphs", optional=True)
        onnxruntime_graphs = {name: _graph(runtime.table(name)) for name in runtime.data} if runtime else {}
        if decoder_pruning is not None and "prefill" not in graphs:
            raise _malformed(source, "graphs.prefill", "a prefill graph (the manifest has decoder_pruning)")
        return cls(
            data=data,
            method=top.get("method", str),
            precision=top.get("precision", str),
            k=top.get("k", int),
            n=top.get("n", int),
            budget_spec=top.table("budget").get("spec", str),
            image_token_id=top.get("image_token_id", int),
            prompt_template=top.get("prompt_template", str),
            follow_up_template=top.get("follow_up_template", str, optional=True),
            preprocess=top.get("preprocess", dict),
            architecture=top.get("architecture", dict),
            graphs=graphs,
            files=files,
            engines=engines,
            language_model=language_model,
            tokenizer_file=None if tokenizer is None else tokenizer.get("file", str),
            embeddings_file=None if embeddings is None else embeddings.get("file", str),
            eos_token_ids=tuple(generation.get("eos_token_ids", list)) if generation else (),
            max_sequence=limits.get("max_sequence", int) if limits else 0,
            anyres=top.get("anyres", dict, optional=True),
            packing=packing,
            newline_file=newline if isinstance(newline, str) or newline is None else str(newline),
            random_weights=bool(data.get("random_weights")),
            decoder_pruning=decoder_pruning,
            onnxruntime_graphs=onnxruntime_graphs,
            positions=_positions(top),
        )

    def paths(self) -> list[str]:
        """Every file path the manifest names: the file table, graphs, assets, engines."""
        paths = list(self.files)
        for graph in [*self.graphs.values(), *self.onnxruntime_graphs.values()]:
            paths += [graph.file, *graph.files]
        paths += [p for p in (self.tokenizer_file, self.embeddings_file, self.newline_file) if p is not None]
        for record in self.engines.values():
            paths += [entry.file for entry in record.graphs.values()]
        return paths

    def with_engines(self, profile: str, record: dict[str, Any]) -> dict[str, Any]:
        """The manifest's JSON with ``record`` as the engines of ``profile`` (what ``build`` writes)."""
        data = dict(self.data)
        data["engines"] = {**data.get("engines", {}), profile: record}
        return data


def _tensors(reader: _Reader, name: str) -> tuple[Tensor, ...]:
    out = []
    for i, _ in enumerate(reader.get(name, list)):
        entry = _Reader(reader.data[name][i], f"{reader.key(name)}[{i}]", reader.source)
        shape = entry.get("shape", list)
        if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            raise _malformed(reader.source, entry.key("shape"), "a list of sizes and axis names")
        out.append(Tensor(entry.get("name", str), tuple(shape), entry.get("dtype", str)))
    return tuple(out)


def _graph(reader: _Reader) -> Graph:
    files = reader.get("files", list)
    if not all(isinstance(f, str) for f in files):
        raise _malformed(reader.source, reader.key("files"), "a list of file names")
    axes = reader.get("dynamic_axes", dict, optional=True) or {}
    cache = reader.table("kv_cache", optional=True)
    return Graph(
        name=reader.get("name", str),
        file=reader.get("file", str),
        files=tuple(files),
        inputs=_tensors(reader, "inputs"),
        outputs=_tensors(reader, "outputs"),
        dynamic_axes={k: {int(i): n for i, n in v.items()} for k, v in axes.items()},
        kv_cache=None if cache is None else cache.get("kind", str),
        kv_cache_max_length=0 if cache is None else cache.get("max_length", int),
    )


def _positions(top: _Reader) -> dict[str, Any] | None:
    positions = top.table("positions", optional=True)
    if positions is None:
        return None
    kind = positions.get("kind", str)
    if kind != "mrope":
        raise _malformed(top.source, "positions.kind", '"mrope" (the only position layout besides the default)')
    grid = positions.get("grid", list)
    if len(grid) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid):
        raise _malformed(top.source, "positions.grid", "[rows, cols] of positive integers")
    return {"kind": kind, "grid": [int(v) for v in grid]}
