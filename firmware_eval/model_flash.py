"""The flash an int8 ``.tflite`` model takes, predicted from its layers before any export.

The analytic verdict (``tinyreport --model``) must agree with the verdict on the exported file,
whose flash is the file's bytes (:func:`tinyexport.firmware_eval.verdicts.predicted_verdict`).
The file holds, besides the int8 weights (:class:`FlashParts`):

* **biases**: one int32 per output channel of every conv / depthwise / linear layer (folded BN);
* **quantization**: a float32 scale and an int64 zero point per output channel of each
  per-channel weight tensor, and the same again for its bias (scale = input × weight scale), or
  one pair each per tensor with ``--per-tensor``;
* **overhead**: the flatbuffer's tables, the activation tensors with their names and
  quantization, the small int32 constants of PAD / MEAN / RESHAPE, the operator codes and the
  converter's metadata: a constant plus a constant per operator.

TFLM compaction (``tinyexport.tflite_graph.compact.compact_for_tflm``) drops the bias
quantization of per-channel convs, collapses their all-zero weight zero points to one element
and drops names and metadata: :func:`predict_model_flash` with ``compaction="tflm"`` predicts that
file. The operators are known from the layers: one per conv / linear layer, an ADD per residual
block, a PAD before each stride-2 conv (the converter pads explicitly) and MEAN + RESHAPE for the
pooled head (``head_as_conv``, the export's default: the classifier is a per-channel 1x1 conv).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["QUANT_BYTES_PER_CHANNEL", "OVERHEAD_BYTES", "OVERHEAD_BYTES_PER_OP", "COMPACTIONS",
           "FLASH_TOLERANCE", "ConstLayer", "AnalyticGraph", "FlashParts", "predict_model_flash"]

# A float32 scale + an int64 zero point (schema.fbs QuantizationParameters).
QUANT_BYTES_PER_CHANNEL = 12
# Calibrated on real exports (tinyexport --model NAME --int8, per-channel, random weights):
# mcunet-in3 @176 (72 ops) leaves 31,808 B and mcunet-in1 @96 (57 ops) 26,512 B of the file
# outside weights, biases and quantization; TFLM-compacted, 14,688 B and 13,144 B. The fit
# predicts the held-out proxylessnas-w0.35, mbv2-tiny and the per-tensor mcunet-in3 within
# 0.3 % of their file sizes (tests/export/test_model_flash.py).
OVERHEAD_BYTES = {None: 6_385, "tflm": 7_279}
OVERHEAD_BYTES_PER_OP = {None: 353, "tflm": 103}
COMPACTIONS = (None, "tflm")
# What the pinning test allows between prediction and a real file: tensor names, and so the
# per-op overhead, vary with the model's depth and the converter's naming; 1 % of the file is
# several times the largest error seen and far below the margins a verdict turns on.
FLASH_TOLERANCE = 0.01


@dataclass(frozen=True)
class ConstLayer:
    """A conv / depthwise / linear layer's constants: weight elements and output channels."""

    kind: str  # conv, pwconv, dwconv, gconv, linear (train.models.profile's op kinds)
    weights: int
    channels: int

    def __post_init__(self) -> None:
        if self.weights <= 0 or self.channels <= 0:
            raise ValueError(f"layer of kind {self.kind!r}: weights and channels must be "
                             f"positive, got {self.weights} and {self.channels}")


@dataclass(frozen=True)
class AnalyticGraph:
    """What the analytic verdict knows of the exported graph: its layers, residual adds, stride-2
    convs (each gets a PAD) and the analytic activation peak."""

    layers: tuple[ConstLayer, ...]
    adds: int
    pads: int
    peak_activation_bytes: int

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a model without conv / linear layers has nothing to predict")

    @property
    def opcodes(self) -> list[str]:
        """The operator types the exported model will have."""
        kinds = {layer.kind for layer in self.layers}
        names = ["CONV_2D", "DEPTHWISE_CONV_2D" if "dwconv" in kinds else None,
                 "ADD" if self.adds else None, "PAD" if self.pads else None, "MEAN", "RESHAPE"]
        return [n for n in names if n]

    @property
    def num_ops(self) -> int:
        return len(self.layers) + self.adds + self.pads + 2  # + MEAN, RESHAPE


@dataclass(frozen=True)
class FlashParts:
    """A model file's bytes in four parts (``total`` = their sum)."""

    weights: int
    biases: int
    quantization: int
    overhead: int
    total: int = field(init=False)
    compaction: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "total",
                           self.weights + self.biases + self.quantization + self.overhead)


def predict_model_flash(graph: AnalyticGraph, per_channel: bool = True,
                        compaction: str | None = None) -> FlashParts:
    """The predicted bytes of the exported int8 file of ``graph`` (``compaction="tflm"``: of the
    TFLM-compacted file), within :data:`FLASH_TOLERANCE` on the zoo exports."""
    if compaction not in COMPACTIONS:
        raise ValueError(f"compaction {compaction!r}: known {COMPACTIONS}")
    layers = graph.layers
    return FlashParts(
        weights=sum(layer.weights for layer in layers),
        biases=4 * sum(layer.channels for layer in layers),
        quantization=sum(_quant_bytes(layer, per_channel, compaction) for layer in layers),
        overhead=OVERHEAD_BYTES[compaction] + OVERHEAD_BYTES_PER_OP[compaction] * graph.num_ops,
        compaction=compaction)


def _quant_bytes(layer: ConstLayer, per_channel: bool, compaction: str | None) -> int:
    """Quantization parameters of a layer's weight and bias tensors."""
    if not per_channel:
        return 2 * QUANT_BYTES_PER_CHANNEL
    channels = layer.channels
    if compaction == "tflm":  # weight scales + one collapsed zero point; bias quantization gone
        return 4 * channels + 8
    return 2 * QUANT_BYTES_PER_CHANNEL * channels

