"""Width-sliceable conv / BN / linear layers of the NetAug supernet (docs/netaug.md §1.2).

Every tensor is allocated at its maximum width; a forward uses the **leading** slice: conv weight
``[:out_active, :in_active]`` (depthwise ``[:C]``), BN ``weight/bias/running_mean/running_var[:C]``,
linear ``weight[:, :in_active]`` and the full bias. ``in_active`` is read from the incoming tensor.
The BN is shared by the base and all augmented sub-networks; in train mode its running statistics
are updated in place through the slice views (as the reference's ``DynamicBatchNorm2d``).
The classes subclass the torch layers so state-dict keys equal ``MBNet``'s.

Memory format (GPU speed, issue 14): a slice ``weight[:out, :in]`` is a strided view; copied with a
plain ``.contiguous()`` it is NCHW even when the activations are channels_last, and a conv with a
channels_last input and an NCHW weight makes cuDNN convert one of them on every call (and pick
another algorithm). :func:`sliced_weight` copies the slice in the memory format of the *input*
(one copy per call, as before), so a channels_last input gives channels_last weights and a
channels_last output through every conv, BN, ReLU6 and residual add; an NCHW input is unchanged.
The copy itself cannot be cached: the weights change at every optimizer step, and autograd must
route the gradient into the max-size parameter through the slice.

Depthwise convs are the exception: with channels_last activations they run NCHW (PyTorch's own
depthwise kernels) and hand a channels_last tensor on. cuDNN's NHWC grouped convs pay a setup on
every new shape, and NetAug draws new widths every step: on an H200 (mbv2-tiny, 144 px, batch 256,
fp32, 2026-11-27) the width phase ran 1.27 s/step all channels_last against 0.115 NCHW, and
0.125 with this exception; the expand-only phase 0.287 against 0.092, and 0.081 with it
(``benchmarks/bench_netaug_layout.py``; the exception's runs followed the all-channels_last run in
one process, so its pointwise shapes were already set up: to be re-measured in fresh processes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` (4-D) is laid out so and not also plain-contiguous (tensors
    with C == 1 or H == W == 1 are both; they count as plain), else ``contiguous_format``."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def sliced_weight(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The (sliced) conv ``weight`` as a dense tensor in the memory format of the input ``x``."""
    return weight.contiguous(memory_format=memory_format_of(x))


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> torch.Tensor:
    """A depthwise conv of ``x`` with the (sliced) ``weight``, computed NCHW; the output has the
    memory format of ``x`` (see the module note on channels_last)."""
    memory_format = memory_format_of(x)
    y = F.conv2d(x.contiguous(), weight.contiguous(), None, stride, padding, 1, x.shape[1])
    return y.contiguous(memory_format=memory_format)


class DynamicConv2d(nn.Conv2d):
    """A conv whose active output width is ``active_out`` (None = all); depthwise when
    ``depthwise`` (then out = in = the incoming width)."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int = 1,
                 depthwise: bool = False):
        super().__init__(max_in, max_out, kernel_size, stride, kernel_size // 2,
                         groups=max_in if depthwise else 1, bias=False)
        self.depthwise = depthwise
        self.active_out: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        if self.depthwise:
            return depthwise_conv(x, self.weight[:cin], self.stride, self.padding)
        out = self.active_out or self.out_channels
        weight = self.weight[:out, :cin]
        return F.conv2d(x, sliced_weight(weight, x), None, self.stride, self.padding, 1, 1)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the leading ``C`` channels of a max-size BN (C = incoming width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch = self.training or self.running_mean is None
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c],
                            self.bias[:c], use_batch, self.momentum, self.eps)


class DynamicLinear(nn.Linear):
    """Linear over the leading ``in`` features (from the input); the output width stays fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :x.shape[1]].contiguous(), self.bias)


class DynamicConvBN(nn.Module):
    """conv → BN → optional ReLU6 with keys ``conv``, ``bn`` (as ``ConvBNAct``)."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1,
                 depthwise: bool = False, act: bool = True, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, kernel_size, stride, depthwise)
        self.bn = DynamicBatchNorm2d(max_out, eps=eps, momentum=momentum)
        self.act = nn.ReLU6(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x
