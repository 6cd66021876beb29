"""Operator allow-list of TensorRT's ONNX parser (onnx-tensorrt).

Source: GitHub repository onnx/onnx-tensorrt, file docs/operators.md, the
TensorRT 10.15 version ("TensorRT 10.15 supports operators in the inclusive
range of opset 9 to opset 24"; docs/Changelog.md entry "TensorRT 10.15 GA
Release - 2026-2-2"). That text was read from a stored code index that does not
give its commit hash. It was checked against a local mirror of the repository
at tag release/10.1-GA (commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c). The
only differences are ops added after 10.1 (Attention, BlackmanWindow,
HammingWindow, HannWindow, RMSNormalization, RotaryEmbedding, STFT,
TensorScatter) and reworded restrictions.
NVIDIA/TensorRT-RTX has no separate ONNX operator list; it uses the same parser.

Data types in the document: DOUBLE, FLOAT32, FLOAT16, BFLOAT16, FP8, FP4, INT32,
INT64, INT8, INT4, UINT8, BOOL. INT64 is supported natively (since TensorRT 9.0
the parser no longer casts INT64 down to INT32), but only for the ops whose row
lists INT64. DOUBLE is cast down to FLOAT. INT8/INT4/FP8/FP4 are available only
through quantization (Q/DQ). UINT8 is allowed only as a network input or output.

Recorded: 2026-11-21.
"""

from __future__ import annotations

TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    {
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Attention",
        "AveragePool",
        "BatchNormalization",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "GRU",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LRN",
        "LSTM",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "PRelu",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "QuantizeLinear",
        "RMSNormalization",
        "RNN",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RoiAlign",
        "RotaryEmbedding",
        "Round",
        "STFT",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "TensorScatter",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    }
)

TENSORRT_UNSUPPORTED_NOTES: dict[str, str] = {
    "AffineGrid": "N; not supported by the ONNX parser.",
    "Attention": (
        "Y (added in 10.14); `Q`, `K`, `V` and `attn_mask` must be 4D. Inputs "
        "`past_key`, `past_value`, `nonpad_kv_seqlen` and outputs "
        "`present_key`, `present_value`, `qk_matmul_output` are unsupported; "
        "attributes `qk_matmul_output_mode` and `softcap` are unsupported. "
        "`q_num_heads`/`kv_num_heads` are taken from the second dimension of "
        "`Q` and `K`/`V`."
    ),
    "AveragePool": "Y; 2D or 3D pooling only. `dilations` must be empty or all ones.",
    "Bernoulli": "N; not supported by the ONNX parser.",
    "BitShift": "N; not supported by the ONNX parser.",
    "BitwiseAnd": "N; not supported by the ONNX parser.",
    "BitwiseNot": "N; not supported by the ONNX parser.",
    "BitwiseOr": "N; not supported by the ONNX parser.",
    "BitwiseXor": "N; not supported by the ONNX parser.",
    "Cast": (
        "Y; no restriction listed. Types: FP32, FP16, BF16, INT32, INT64, "
        "UINT8, BOOL (DOUBLE only via cast down to FLOAT, clamped to +-FLT_MAX; "
        "UINT8 only as network input/output)."
    ),
    "CastLike": (
        "Y; no restriction listed. Types: FP32, FP16, BF16, INT32, INT64, "
        "UINT8, BOOL."
    ),
    "CenterCropPad": "N; not supported by the ONNX parser.",
    "Col2Im": "N; not supported by the ONNX parser.",
    "Compress": "N; not supported by the ONNX parser.",
    "ConcatFromSequence": "N; not supported by the ONNX parser.",
    "Constant": (
        "Y; `sparse_value`, `value_string` and `value_strings` attributes are "
        "unsupported."
    ),
    "ConvInteger": "N; not supported by the ONNX parser.",
    "CumSum": "Y; `axis` must be a build-time constant.",
    "DFT": "N; not supported by the ONNX parser.",
    "DeformConv": (
        "Y (FP32, FP16 only); `input` must have 1D or 2D spatial dimensions. "
        "Begin and end `pads` along each spatial axis must be the same."
    ),
    "DequantizeLinear": (
        "Y; `x_zero_point` must be zero. Input types: INT8, FP8, FP4, INT4."
    ),
    "Det": "N; not supported by the ONNX parser.",
    "Dropout": "Y; `is_training` must be an initializer and evaluate to False.",
    "DynamicQuantizeLinear": (
        "N; not supported. TensorRT's IDynamicQuantize can be composed from "
        "ONNX operators as a model local function."
    ),
    "Einsum": (
        "Y; no restriction listed in 10.15 (ellipsis, diagonal and broadcasting "
        "were added in 10.12; older docs excluded them)."
    ),
    "EyeLike": "Y; `input` must have static dimensions.",
    "GRU": (
        "Y; for bidirectional GRUs, activation functions must be the same for "
        "the forward and reverse pass."
    ),
    "Gather": (
        "Y; no restriction listed. Types: FP32, FP16, BF16, INT32, INT64, BOOL. "
        "Negative indices supported natively (since 8.2)."
    ),
    "GatherElements": (
        "Y; no restriction listed. Types: FP32, FP16, BF16, INT32, INT64, BOOL."
    ),
    "GatherND": (
        "Y; no restriction listed. Types: FP32, FP16, BF16, INT32, INT64, BOOL."
    ),
    "GridSample": "Y (FP32, FP16 only); input must be 4D.",
    "Hardmax": "Y; the `axis` dimension of the input must be a build-time constant.",
    "If": (
        "Y; output tensors of the two branches must have the same rank and must "
        "have different names."
    ),
    "ImageDecoder": "N; not supported by the ONNX parser.",
    "LSTM": (
        "Y; for bidirectional LSTMs, activation functions must be the same for "
        "the forward and reverse pass. `input_forget` must be 0. `layout` must "
        "be 0."
    ),
    "LayerNormalization": (
        "Y (FP32, FP16, BF16); only the first output `Y` is supported (Mean and "
        "InvStdDev outputs are not)."
    ),
    "Loop": (
        "Y; scan output length cannot be dynamic. The shape of loop-carried "
        "dependencies must be the same across all iterations."
    ),
    "LpPool": "Y; `dilations` must be empty or all ones.",
    "MatMulInteger": "N; not supported by the ONNX parser.",
    "MaxPool": (
        "Y; 2D or 3D pooling only. The `Indices` output is unsupported. "
        "`dilations` must be empty or all ones."
    ),
    "MaxRoiPool": "N; not supported by the ONNX parser.",
    "MaxUnpool": "N; not supported by the ONNX parser.",
    "MelWeightMatrix": "N; not supported by the ONNX parser.",
    "Multinomial": "N; not supported by the ONNX parser.",
    "NegativeLogLikelihoodLoss": "N; not supported by the ONNX parser.",
    "NonMaxSuppression": "Y; no restriction listed. Types: FP32, FP16 only.",
    "NonZero": (
        "Y; no restriction listed. Types: FP32, FP16 only (INT32, INT64 and "
        "BOOL inputs are not listed)."
    ),
    "OneHot": "Y; `depth` must be a build-time constant.",
    "Optional": "N; not supported by the ONNX parser.",
    "OptionalGetElement": "N; not supported by the ONNX parser.",
    "OptionalHasElement": "N; not supported by the ONNX parser.",
    "Pad": (
        "Y; no restriction listed in 10.15 (tensor `axes` supported since 10.4; "
        "older docs required `axes` to be an initializer)."
    ),
    "QLinearConv": "N; not supported by the ONNX parser.",
    "QLinearMatMul": "N; not supported by the ONNX parser.",
    "QuantizeLinear": "Y; `y_zero_point` must be 0.",
    "RNN": (
        "Y; for bidirectional RNNs, activation functions must be the same for "
        "the forward and reverse pass."
    ),
    "RandomNormal": "Y; the `seed` value is ignored by TensorRT.",
    "RandomNormalLike": "Y; the `seed` value is ignored by TensorRT.",
    "RandomUniform": "Y; the `seed` value is ignored by TensorRT.",
    "RandomUniformLike": "Y; the `seed` value is ignored by TensorRT.",
    "ReduceL1": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceL2": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceLogSum": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceLogSumExp": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceMax": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceMean": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceMin": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceProd": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceSum": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "ReduceSumSquare": (
        "Y; `axes` must be an initializer. Types: FP32, FP16, BF16, INT32, "
        "INT64."
    ),
    "RegexFullMatch": "N; not supported by the ONNX parser.",
    "Resize": (
        "Y; coordinate transformation modes: half_pixel, pytorch_half_pixel, "
        "tf_half_pixel_for_nn, asymmetric, align_corners. Modes: nearest, "
        "linear (no cubic). Nearest modes: floor, ceil, round_prefer_floor, "
        "round_prefer_ceil. Aspect ratio policy: stretch only. When `scales` is "
        "a tensor input, `axes` must be an iota vector of length rank(input). "
        "Antialiasing is not supported."
    ),
    "RotaryEmbedding": "Y (added in 10.15); `position_ids` must be INT64.",
    "STFT": (
        "Y (FP32 only); `frame_step` and `window` must be initializers. Input "
        "must be real-valued."
    ),
    "ScatterND": "Y; `reduction` other than `none` is not supported.",
    "SequenceAt": "N; not supported by the ONNX parser.",
    "SequenceConstruct": "N; not supported by the ONNX parser.",
    "SequenceEmpty": "N; not supported by the ONNX parser.",
    "SequenceErase": "N; not supported by the ONNX parser.",
    "SequenceInsert": "N; not supported by the ONNX parser.",
    "SequenceLength": "N; not supported by the ONNX parser.",
    "SequenceMap": "N; not supported by the ONNX parser.",
    "Slice": (
        "Y; no restriction listed in 10.15 (tensor `axes` supported since 10.3; "
        "older docs required `axes` to be an initializer)."
    ),
    "SoftmaxCrossEntropyLoss": "N; not supported by the ONNX parser.",
    "SplitToSequence": "N; not supported by the ONNX parser.",
    "Squeeze": "Y; `axes` must be resolvable to a constant.",
    "StringConcat": "N; not supported by the ONNX parser.",
    "StringNormalizer": "N; not supported by the ONNX parser.",
    "StringSplit": "N; not supported by the ONNX parser.",
    "TensorScatter": (
        "Y (added in 10.15); `past_cache` and `update` must be 4D. `axis` must "
        "be -2."
    ),
    "TfIdfVectorizer": "N; not supported by the ONNX parser.",
    "TopK": (
        "Y; `sorted` must be 1. `K` input must be less than 3840 (K may be "
        "dynamic since 8.6; older docs required K to be an initializer)."
    ),
    "Unique": "N; not supported by the ONNX parser.",
    "Unsqueeze": "Y; `axes` must be resolvable to a constant.",
}
