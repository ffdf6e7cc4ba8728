"""torch.nn layers on pyfast's kernels. Each is a subclass of the torch.nn module of the same
name: the same constructor arguments, parameters, initialization and ``state_dict`` keys, so a
checkpoint moves between a plain PyTorch model and one with pyfast layers both ways; only
``forward`` differs (pyfast.torch.functional). ``swap_modules(model)`` turns an existing
model's supported modules into these in place, parameters untouched."""

import warnings

import torch

from pyfast.torch import functional as F
from pyfast.torch._bridge import device_type


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d; ``padding_mode`` must be "zeros" (the kernels pad with zeros only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_padding_mode(self)

    def forward(self, input):
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _check_padding_mode(module):
    if module.padding_mode != "zeros":
        raise ValueError(f"pyfast.torch.nn.Conv2d: padding_mode: only 'zeros' is supported, got "
                         f"{module.padding_mode!r}")


class Linear(torch.nn.Linear):
    """torch.nn.Linear: one matmul with the bias in its epilogue."""

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class ReLU(torch.nn.ReLU):
    def forward(self, input):
        return F.relu(input, self.inplace)


class Softmax(torch.nn.Softmax):
    def forward(self, input):
        return F.softmax(input, self.dim)


class LogSoftmax(torch.nn.LogSoftmax):
    def forward(self, input):
        return F.log_softmax(input, self.dim)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss on pyfast's fused loss (the forward writes the gradient).
    ``validate`` (keyword): see pyfast.torch.cross_entropy."""

    def __init__(self, *args, validate=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.validate = validate

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing, validate=self.validate)


class MSELoss(torch.nn.MSELoss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


# torch.nn type -> its pyfast twin (exact types only: a subclass may have changed forward)
SWAPS = {torch.nn.Conv2d: Conv2d, torch.nn.Linear: Linear, torch.nn.MaxPool2d: MaxPool2d,
         torch.nn.AvgPool2d: AvgPool2d, torch.nn.ReLU: ReLU, torch.nn.Softmax: Softmax,
         torch.nn.LogSoftmax: LogSoftmax, torch.nn.CrossEntropyLoss: CrossEntropyLoss, torch.nn.MSELoss: MSELoss}


class SwapReport:
    """What ``swap_modules`` did: ``swapped`` (qualified names) and ``kept`` ({name: why}) for
    the modules of a supported type it left as they were."""

    def __init__(self):
        self.swapped, self.kept = [], {}

    def __repr__(self):
        kept = "; ".join(f"{name}: {why}" for name, why in self.kept.items())
        return f"SwapReport(swapped {len(self.swapped)}: {self.swapped}" + (f"; kept {kept})" if kept else ")")


def _why_not(module):
    """Why a module of a supported type cannot run on pyfast's kernels ('' when it can)."""
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return f"padding_mode={module.padding_mode!r} (pyfast pads with zeros only)"
    for name, p in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if p is None or not p.is_floating_point():
            continue
        if p.dtype != torch.float32:
            return f"{name} is {p.dtype} (pyfast's kernels are float32)"
        if p.device.type != device_type():
            return f"{name} is on {p.device} (pyfast.torch runs on {device_type()} tensors here)"
    return ""


def swap_modules(model):
    """Turns ``model``'s torch.nn.Conv2d, Linear, MaxPool2d, AvgPool2d, ReLU, Softmax,
    LogSoftmax, CrossEntropyLoss and MSELoss modules (exact types, ``model`` itself included)
    into their pyfast.torch.nn twins in place: the same objects, parameters and hooks; only
    their class changes. Returns a ``SwapReport``; a supported module it had to keep (another
    padding mode, dtype or device) is named there with why, and in one warning."""
    report = SwapReport()
    for name, module in model.named_modules():
        twin = SWAPS.get(type(module))
        if twin is None:
            continue
        why = _why_not(module)
        if why:
            report.kept[name or type(module).__name__] = why
            continue
        module.__class__ = twin
        if twin is CrossEntropyLoss:
            module.validate = True
        report.swapped.append(name or type(module).__name__)
    if report.kept:
        warnings.warn(f"pyfast.torch.nn.swap_modules kept {len(report.kept)} module(s) as PyTorch's: "
                      + "; ".join(f"{n}: {why}" for n, why in report.kept.items()), stacklevel=2)
    return report


__all__ = ["Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "ReLU", "Softmax", "LogSoftmax", "CrossEntropyLoss",
           "MSELoss", "swap_modules", "SwapReport"]
