"""Layers with explicit forward() and backward(), no autograd: each layer caches what its
backward needs and calls the ops directly, on either backend.

A Backend bundles the op module (pyfast.ops on the GPU, pyfast.cpu on NumPy) with its
array module; every layer holds one. Activations and gradients live in buffers allocated
once per batch shape and reused through ``out=``: a warmed-up training step allocates
nothing for them. (So a layer's output is overwritten by its next forward: copy it if you
keep it; ``pyfast.train.predict`` does.)
"""

import math
import weakref

import numpy as np

from pyfast import _checks, cpu
from pyfast._device import is_available, unavailable_reason


# ----------------------------------------------------------------------------- backends
class Backend:
    """``cuda``: pyfast.ops on CuPy arrays. ``numpy``: pyfast.cpu on NumPy arrays (float32 on
    BLAS; pyfast.reference, the float64 oracle, has the same ops for tests)."""

    def __init__(self, name):
        if name == "cuda":
            if not is_available():
                raise RuntimeError(f"backend 'cuda' needs a usable GPU, but {unavailable_reason()}")
            import cupy

            from pyfast import ops

            self.ops, self.xp = ops, cupy
        elif name == "numpy":
            self.ops, self.xp = cpu, np
        else:
            raise ValueError(f"backend: expected 'cuda' or 'numpy', got {name!r}")
        self.name = name

    def asarray(self, array, dtype=np.float32):
        """A contiguous array of this backend from host (or device) data."""
        return self.xp.ascontiguousarray(self.xp.asarray(array, dtype=dtype))

    def to_numpy(self, array):
        return array.get() if self.name == "cuda" else np.asarray(array)

    def __repr__(self):
        return f"Backend({self.name!r})"


def default_backend_name():
    return "cuda" if is_available() else "numpy"


def get_backend(backend=None):
    """A Backend from a name, a Backend, or None (cuda when a GPU is usable, else numpy)."""
    if isinstance(backend, Backend):
        return backend
    return Backend(backend or default_backend_name())


# ---------------------------------------------------------------------------- initialisers
def init_uniform_default(rng, shape, fan_in):
    """PyTorch's default for Linear and Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def init_xavier_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def init_he_normal(rng, shape, fan_in):
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


INITS = ("default", "xavier", "he")


def _init_weight_and_bias(init, rng, weight_shape, fan_in, fan_out):
    if init == "default":
        return init_uniform_default(rng, weight_shape, fan_in), init_uniform_default(rng, (weight_shape[0],), fan_in)
    if init == "xavier":
        return init_xavier_uniform(rng, weight_shape, fan_in, fan_out), np.zeros(weight_shape[0], np.float32)
    if init == "he":
        return init_he_normal(rng, weight_shape, fan_in), np.zeros(weight_shape[0], np.float32)
    raise ValueError(f"init: expected one of {list(INITS)}, got {init!r}")


# -------------------------------------------------------------------------------- modules
# id(parameter array) -> the layer holding it, so that an optimizer given model.parameters()
# finds the gradient array each backward writes (weak: a dropped layer leaves no entry; the list
# parameters() returns holds its model, and an optimizer the layers it updates).
_OWNERS = weakref.WeakValueDictionary()


class Parameters(list):
    """What Module.parameters() returns: the parameter arrays, holding `module` alive."""

    def __init__(self, arrays, module):
        super().__init__(arrays)
        self.module = module


def owner_of(param):
    """(layer, gradient array) of a layer's parameter array: the layer holding it and the array
    its backward() writes the gradient into; (None, None) when `param` is not a parameter of a
    live pyfast layer (or no longer is: the layer's attribute was replaced)."""
    layer = _OWNERS.get(id(param))
    if layer is not None:
        for own, grad in zip(layer.parameters(), layer.gradients()):
            if own is param:
                return layer, grad
    return None, None


def gradient_of(param):
    """The gradient array backward() writes for a layer's parameter array (None: not one)."""
    return owner_of(param)[1]


def _host(name, value):
    """A NumPy view of a state value given as a NumPy or CuPy array (or anything array-like)."""
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):
        value = value.get()
    try:
        value = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - reported as the entry's type problem
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({error})") from None
    if value.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a numeric array, got dtype {value.dtype}")
    return value


class Module:
    """Base: named parameters / gradients (same order), train / eval modes, state dicts,
    reused buffers.

    ``requires_input_grad``: whether backward() computes and returns dL/dx. True for a layer
    used alone; a Sequential sets it per layer (see there). With False, backward() writes the
    parameters' gradients only and returns None."""

    def __init__(self, backend=None):
        self.backend = get_backend(backend)
        self.training = True
        self._buffers = {}
        self.requires_input_grad = True

    def named_parameters(self, prefix=""):
        """(name, array) pairs in a fixed order, named as PyTorch names them ("0.weight" is the
        weight of a Sequential's first layer)."""
        return []

    def parameters(self):
        """The parameter arrays (trained in place), in the order of named_parameters(): a list
        that keeps this model alive, so that an optimizer given it finds the gradient arrays the
        layers write even where nothing else holds the model (``Adam(nn.Linear(2, 1).parameters())``)."""
        return Parameters((param for _, param in self.named_parameters()), self)

    def gradients(self):
        """The gradient arrays backward() writes, one per parameter, same order."""
        return []

    def state_dict(self):
        """{name: parameter array} (the arrays themselves, as PyTorch's state_dict holds the
        tensors: copy them to keep a snapshot; pyfast.train.save writes them to a file)."""
        return dict(self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copies `state` ({name: array}, NumPy or CuPy) into the parameters, in place (so an
        optimizer and a captured CUDA graph keep training the same arrays). ``strict``: every
        name must match; otherwise names missing on either side are skipped. Shapes must match."""
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict of arrays (from state_dict()), got {type(state).__name__}")
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"state: missing {missing}, unexpected {unexpected} (this model has {list(own)})")
        checked = {}
        for name, param in own.items():
            if name in state:
                value = _host(f"state[{name!r}]", state[name])
                if value.shape != param.shape:
                    raise ValueError(f"state[{name!r}]: expected shape {param.shape}, got {value.shape}")
                checked[name] = value
        for name, value in checked.items():  # nothing is written unless everything fits
            own[name][...] = self.backend.asarray(value)
        return self

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _buffer(self, name, shape, dtype=np.float32):
        """A scratch array per name and shape, kept for the module's life: alternating batch
        shapes (training, the last partial batch, evaluation) reuse theirs instead of
        reallocating, and a CUDA graph captured on one shape keeps valid memory."""
        key = (name, tuple(shape), np.dtype(dtype).str)
        array = self._buffers.get(key)
        if array is None:
            array = self.backend.xp.empty(shape, dtype=dtype)
            self._buffers[key] = array
        return array

    def config(self):
        """What load() needs to rebuild this layer (weights travel separately)."""
        return {"type": type(self).__name__}

    def extra_repr(self):
        """The settings shown inside repr(), as PyTorch's modules show them."""
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, x):
        return self.forward(x)


class _ParametrizedLayer(Module):
    def _set_parameters(self, weight, bias):
        self.weight, self.bias = self.backend.asarray(weight), self.backend.asarray(bias)
        self.grad_weight = self.backend.xp.zeros_like(self.weight)
        self.grad_bias = self.backend.xp.zeros_like(self.bias)
        _OWNERS[id(self.weight)] = self
        _OWNERS[id(self.bias)] = self

    def named_parameters(self, prefix=""):
        return [(prefix + "weight", self.weight), (prefix + "bias", self.bias)]

    def gradients(self):
        return [self.grad_weight, self.grad_bias]


def _size(name, value):
    return _checks.expect_int(name, value, 1)


class Linear(_ParametrizedLayer):
    """y = x @ weight.T + bias (weight is (out, in), as PyTorch's), optionally with a fused ReLU.
    Backward: dx = dy @ weight, dweight = dy.T @ x, dbias = sum of dy over the batch."""

    def __init__(self, in_features, out_features, *, activation=None, init="default", rng=None, backend=None):
        super().__init__(backend)
        self.in_features, self.out_features = _size("in_features", in_features), _size("out_features", out_features)
        _checks.activation_code(activation)
        self.activation, self.init = activation, init
        rng = rng if rng is not None else np.random.default_rng(0)
        self._set_parameters(*_init_weight_and_bias(init, rng, (out_features, in_features), in_features,
                                                    out_features))

    def forward(self, x):
        ops = self.backend.ops
        self._x = x
        y = self._buffer("y", (x.shape[0], self.out_features))
        self._y = ops.matmul(x, self.weight, trans_b=True, bias=self.bias, activation=self.activation, out=y)
        return self._y

    def backward(self, dy):
        ops = self.backend.ops
        if self.activation == "relu":
            dy = ops.relu_backward(dy, self._y, out=self._buffer("dz", dy.shape))
        ops.matmul(dy, self._x, trans_a=True, out=self.grad_weight)
        ops.bias_grad(dy, out=self.grad_bias)
        if not self.requires_input_grad:
            return None
        return ops.matmul(dy, self.weight, out=self._buffer("dx", self._x.shape))

    def config(self):
        return dict(super().config(), in_features=self.in_features, out_features=self.out_features,
                    activation=self.activation)

    def extra_repr(self):
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        return text + (f", activation={self.activation!r}" if self.activation else "")


class Conv2d(_ParametrizedLayer):
    """2D convolution (NCHW, weight (out, in, kh, kw)) with bias, optionally with a fused ReLU
    (``activation="relu"``; a Sequential also fuses a Conv2d followed by a ReLU layer). The
    arguments before ``*`` are torch.nn.Conv2d's, in its order (``padding`` "valid" / "same"
    included, kept as the ints they mean where both sides match; ``groups`` as pyfast.ops.conv2d
    runs them). ``version``: the conv kernels to run on the GPU (one of
    pyfast.ops.CONV2D_VERSIONS; None: chosen per pass and shape)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 init="default", rng=None, backend=None, version=None, activation=None):
        super().__init__(backend)
        _checks.conv2d_version_code(version)
        _checks.conv2d_activation(activation)
        self.groups = _checks.conv2d_groups(groups)
        self.version, self.activation = version, activation
        self.in_channels, self.out_channels = _size("in_channels", in_channels), _size("out_channels", out_channels)
        if in_channels % self.groups or out_channels % self.groups:
            raise ValueError(f"groups: {groups} groups must divide both in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        kh, kw = self.kernel_size = _checks.pair("kernel_size", kernel_size, 1)
        self.stride, self.dilation = _checks.pair("stride", stride, 1), _checks.pair("dilation", dilation, 1)
        (top, bottom), (left, right) = _checks.conv2d_padding(padding, (out_channels, in_channels, kh, kw),
                                                              self.stride, self.dilation)
        # Ints where both sides match; "same" where PyTorch pads the bottom / right one more.
        self.padding = (top, left) if (top, left) == (bottom, right) else "same"
        rng = rng if rng is not None else np.random.default_rng(0)
        per_group = in_channels // self.groups  # PyTorch's fans: of one group's filter
        fan_in, fan_out = per_group * kh * kw, out_channels // self.groups * kh * kw
        self._set_parameters(*_init_weight_and_bias(init, rng, (out_channels, per_group, kh, kw), fan_in, fan_out))

    def _geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    version=self.version)

    def forward(self, x):
        return self._forward(x, self.activation)

    def _forward(self, x, activation):
        self._x = x
        shape = _checks.conv2d_dims(x.shape, self.weight.shape, self.stride, self.padding, self.dilation,
                                    self.groups)["y_shape"]
        self._y = self.backend.ops.conv2d(x, self.weight, self.bias, activation=activation,
                                          out=self._buffer("y", shape), **self._geometry())
        return self._y

    def backward(self, dy):
        ops = self.backend.ops
        if self.activation == "relu":
            dy = ops.relu_backward(dy, self._y, out=self._buffer("dz", dy.shape))
        # The bias gradient comes from the weight gradient's pass where the kernel folds it in.
        ops.conv2d_backward_weight(dy, self._x, self.weight.shape, bias=True, out=self.grad_weight,
                                   out_bias=self.grad_bias, **self._geometry())
        if not self.requires_input_grad:
            return None
        return ops.conv2d_backward_input(dy, self.weight, self._x.shape, out=self._buffer("dx", self._x.shape),
                                         **self._geometry())

    def config(self):
        config = dict(super().config(), in_channels=self.in_channels, out_channels=self.out_channels,
                      kernel_size=list(self.kernel_size), stride=list(self.stride),
                      padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                      dilation=list(self.dilation), groups=self.groups, version=self.version)
        if self.activation:
            config["activation"] = self.activation
        return config

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        text += f", version={self.version!r}" if self.version else ""
        return text + (f", activation={self.activation!r}" if self.activation else "")


class ReLU(Module):
    def forward(self, x):
        self._y = self.backend.ops.relu(x, out=self._buffer("y", x.shape))
        return self._y

    def backward(self, dy):
        if not self.requires_input_grad:
            return None
        return self.backend.ops.relu_backward(dy, self._y, out=self._buffer("dx", dy.shape))


class _Pool2d(Module):
    """The window settings both poolings check at construction (stride None: the kernel)."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode, backend):
        super().__init__(backend)
        self.kernel_size, self.stride, self.padding, self.dilation = _checks.pool2d_window(kernel_size, stride,
                                                                                         padding, dilation)
        _checks.expect_bool("ceil_mode", ceil_mode)
        self.ceil_mode = bool(ceil_mode)

    def _output_shape(self, x):
        return _checks.pool2d_dims(x.shape, self.kernel_size, self.stride, self.padding, self.dilation,
                                   self.ceil_mode)["y_shape"]

    def config(self):
        return dict(super().config(), kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else ""))


class MaxPool2d(_Pool2d):
    """torch.nn.MaxPool2d's arguments in its order (``return_indices`` False only: a layer's
    backward keeps the indices itself)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False, *,
                 backend=None):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, backend)
        _checks.expect_bool("return_indices", return_indices)
        if return_indices:
            raise ValueError("return_indices: a layer returns the pooled output only (its backward keeps the "
                             "indices); call pyfast.ops.max_pool2d(..., return_indices=True) for them")

    def config(self):
        return dict(super().config(), dilation=list(self.dilation))

    def extra_repr(self):
        return super().extra_repr() + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")

    def forward(self, x):
        return self._forward(x, None)

    def _forward(self, x, activation):
        """activation="relu": pools relu(x) in the same pass (a Sequential's Conv2d, ReLU, MaxPool2d)."""
        shape = self._output_shape(x)
        self._x_shape = x.shape
        self._y, self._indices = self.backend.ops.max_pool2d(x, *self._window(), return_indices=True,
                                                             activation=activation, out=self._buffer("y", shape),
                                                             out_indices=self._buffer("indices", shape, np.int64))
        return self._y

    def _window(self):
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode

    def _pairs(self):
        """Whether this is the 2x2 stride-2 unpadded window (what conv2d_max_pool2d pools)."""
        return (self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0)
                and self.dilation == (1, 1) and not self.ceil_mode)

    def _forward_after_conv(self, conv, x):
        """relu(conv(x)) pooled in one op (a Sequential's Conv2d, ReLU, MaxPool2d): the conv
        keeps its input for its backward, this layer its output, indices and input shape."""
        conv._x = x
        g = _checks.conv2d_dims(x.shape, conv.weight.shape, conv.stride, conv.padding, conv.dilation, conv.groups)
        shape = _checks.pool2d_dims(g["y_shape"], 2, 2, 0)["y_shape"]
        self._x_shape = g["y_shape"]
        self._y, self._indices = self.backend.ops.conv2d_max_pool2d(
            x, conv.weight, conv.bias, activation="relu", out=self._buffer("y", shape),
            out_indices=self._buffer("indices", shape, np.int64), **conv._geometry())
        return self._y

    def backward(self, dy):
        if not self.requires_input_grad:
            return None
        return self._backward(dy, None)

    def _backward(self, dy, relu_output):
        """The gradient from the window geometry (each dx written once); with relu_output also
        through the ReLU whose output this layer pooled (a Sequential's ReLU then MaxPool2d)."""
        return self.backend.ops.max_pool2d_backward(dy, self._indices, self._x_shape, *self._window(),
                                                    relu_output=relu_output, out=self._buffer("dx", self._x_shape))


class AvgPool2d(_Pool2d):
    """torch.nn.AvgPool2d's arguments in its order."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, backend)
        _checks.expect_bool("count_include_pad", count_include_pad)
        self.count_include_pad = count_include_pad
        self.divisor_override = _checks.divisor_override(divisor_override)

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def forward(self, x):
        shape = self._output_shape(x)
        self._x_shape = x.shape
        return self.backend.ops.avg_pool2d(x, *self._args(), out=self._buffer("y", shape))

    def backward(self, dy):
        if not self.requires_input_grad:
            return None
        return self.backend.ops.avg_pool2d_backward(dy, self._x_shape, *self._args(),
                                                    out=self._buffer("dx", self._x_shape))

    def config(self):
        return dict(super().config(), count_include_pad=self.count_include_pad, divisor_override=self.divisor_override)

    def extra_repr(self):
        return (super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")
                + (f", divisor_override={self.divisor_override}" if self.divisor_override is not None else ""))


class Flatten(Module):
    """(N, ...) -> (N, prod(...)); a view both ways."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: an empty batch has no size to infer

    def backward(self, dy):
        return dy.reshape(self._shape) if self.requires_input_grad else None


class Sequential(Module):
    """Layers applied in order. ``requires_input_grad`` (default False: a model's own input
    gradient is rarely wanted) decides what backward() computes: every layer after the first
    one with parameters passes its input gradient on; that first one (a CNN's first convolution,
    whose input gradient would cost as much as its weight gradient) and the parameter-free
    layers before it compute none unless the model's input gradient is asked for."""

    def __init__(self, *layers, backend=None, requires_input_grad=False, input_shape=None):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{i}]: expected a pyfast.nn layer, got {type(layer).__name__}")
        super().__init__(backend if backend is not None else (layers[0].backend if layers else None))
        for layer in layers:
            if layer.backend.name != self.backend.name:
                raise ValueError(f"layers: every layer needs the {self.backend.name} backend, got {layer.backend.name}")
        if input_shape is not None:
            input_shape = tuple(_checks.expect_int(f"input_shape[{i}]", d, 1) for i, d in enumerate(input_shape))
        # The shape of one sample (without the batch axis) the model is built for, or None: with
        # it, forward() names a wrong input shape instead of failing in a later layer.
        self.input_shape = input_shape
        self.layers = list(layers)
        self.requires_input_grad = requires_input_grad

    @property
    def requires_input_grad(self):
        return self._requires_input_grad

    @requires_input_grad.setter
    def requires_input_grad(self, value):
        _checks.expect_bool("requires_input_grad", value)
        self._requires_input_grad = bool(value)
        layers = getattr(self, "layers", [])  # Module.__init__ sets it before the layers exist
        first = next((i for i, layer in enumerate(layers) if layer.parameters()), len(layers))
        for i, layer in enumerate(layers):
            layer.requires_input_grad = self._requires_input_grad or i > first

    def forward(self, x):
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            sample = "x".join(map(str, self.input_shape[1:])) if len(self.input_shape) == 3 else None
            built = f" (it was built for {sample} images of {self.input_shape[0]} channel" \
                    f"{'s' if self.input_shape[0] > 1 else ''})" if sample else ""
            raise ValueError(f"x: this model takes inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}{built}")
        layers = self.layers
        i = 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if type(layer) is Conv2d and layer.activation is None and type(following) is ReLU:
                third = layers[i + 2] if i + 2 < len(layers) else None
                if type(third) is MaxPool2d and third.requires_input_grad and following.requires_input_grad:
                    # Conv2d, ReLU, MaxPool2d: the pool pools the conv output's ReLU (relu(max) =
                    # max(relu), same winners), for a 2x2 window in the conv's own epilogue where
                    # the kernel can (conv2d_max_pool2d), else reading the output once; backward()
                    # folds the ReLU into the pool's gradient: the ReLU's own output is never needed.
                    x = third._forward_after_conv(layer, x) if third._pairs() else \
                        third._forward(layer._forward(x, None), "relu")
                    i += 3
                    continue
                # Conv2d then ReLU: one launch, the ReLU in the conv's epilogue (relu(round(v)) =
                # round(relu(v)): the same numbers); the ReLU layer keeps that output for its backward.
                x = following._y = layer._forward(x, "relu")
                i += 2
                continue
            x = layer.forward(x)
            i += 1
        return x

    def backward(self, dy):
        layers = self.layers
        i = len(layers) - 1
        while i >= 0 and dy is not None:  # None: no layer before this one needs a gradient
            layer = layers[i]
            previous = layers[i - 1] if i > 0 else None
            if (type(layer) is MaxPool2d and type(previous) is ReLU and layer.requires_input_grad
                    and previous.requires_input_grad):
                # ReLU then MaxPool2d: the pool's gradient gathers only from windows whose maximum
                # is > 0, which is ReLU's backward at the element that won: one pass instead of two.
                dy = layer._backward(dy, layer._y)
                i -= 2
            else:
                dy = layer.backward(dy)
                i -= 1
        return dy if self.requires_input_grad else None

    def named_parameters(self, prefix=""):
        return [pair for i, layer in enumerate(self.layers) for pair in layer.named_parameters(f"{prefix}{i}.")]

    def gradients(self):
        return [g for layer in self.layers for g in layer.gradients()]

    def train(self, mode=True):
        for layer in self.layers:
            layer.train(mode)
        return super().train(mode)

    def config(self):
        config = dict(super().config(), layers=[layer.config() for layer in self.layers])
        if self.requires_input_grad:
            config["requires_input_grad"] = True
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    def __repr__(self):
        lines = [f"  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]


LAYERS = {cls.__name__: cls for cls in (Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Sequential)}


def from_config(config, backend=None):
    """Rebuilds a layer (with fresh weights) from Module.config()."""
    config = dict(config)
    cls = LAYERS.get(config.pop("type", None))
    if cls is None:
        raise ValueError(f"config: unknown layer type in {config!r}")
    if cls is Sequential:
        return Sequential(*(from_config(c, backend) for c in config["layers"]), backend=backend,
                          requires_input_grad=bool(config.get("requires_input_grad", False)),
                          input_shape=config.get("input_shape"))
    if cls is Linear:
        return Linear(config["in_features"], config["out_features"], activation=config.get("activation"),
                      backend=backend)
    if cls is Conv2d:
        return Conv2d(config["in_channels"], config["out_channels"], tuple(config["kernel_size"]),
                      stride=config["stride"], padding=config["padding"], dilation=config["dilation"],
                      groups=config.get("groups", 1), version=config.get("version"),
                      activation=config.get("activation"), backend=backend)
    return cls(**config, backend=backend)


# --------------------------------------------------------------------------------- losses
def _not_a_backend(name, value):
    """The losses once took the backend first; their first argument is PyTorch's now."""
    if isinstance(value, (str, Backend)):
        raise TypeError(f"{name}: got the backend {value!r}; the losses take torch.nn's arguments in its order, "
                        "pass the backend as backend=")


class MSELoss:
    """(loss, dloss/dinput) of the mean squared error; the gradient buffer is reused.
    torch.nn.MSELoss's arguments (``size_average`` / ``reduce`` None only)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", *, backend=None):
        _not_a_backend("size_average", size_average)
        _checks.legacy_reduction(size_average, reduce)
        _checks.reduction_scales(reduction, 1)
        self.reduction = reduction
        self.backend = get_backend(backend)
        self._grads = {}

    def _grad(self, shape):
        """The gradient buffer for one prediction shape (kept, as the layers' buffers are)."""
        grad = self._grads.get(tuple(shape))
        if grad is None:
            grad = self._grads[tuple(shape)] = self.backend.xp.empty(shape, np.float32)
        return grad

    def config(self):
        return {"type": "MSELoss", "reduction": self.reduction}

    def __call__(self, pred, target):
        return self.backend.ops.mse_loss(pred, target, reduction=self.reduction, out_grad=self._grad(pred.shape))


class CrossEntropyLoss:
    """(loss, dloss/dlogits) of softmax cross-entropy, with torch.nn.CrossEntropyLoss's
    arguments in its order. Without a ``weight`` and ``label_smoothing``, with reduction "mean"
    or "sum" and a negative ``ignore_index`` (the default, -100), it runs the single fused kernel
    (softmax_cross_entropy), whose labels must lie in
    [0, C): the first call checks them (a synchronization on the GPU) and raises naming a label
    outside, ``ignore_index`` included; later calls trust them (a bad label then shows as a NaN
    loss) so a training step never waits on the host. With any option set it runs
    cross_entropy, PyTorch's semantics exactly (rows labelled ``ignore_index`` skipped)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0, *, backend=None):
        _not_a_backend("weight", weight)
        self.backend = get_backend(backend)
        _checks.legacy_reduction(size_average, reduce)
        self.ignore_index, _, self.label_smoothing = _checks.cross_entropy_options(ignore_index, reduction,
                                                                                   label_smoothing)
        self.reduction = reduction
        self.weight = None if weight is None else self.backend.asarray(weight)
        if self.weight is not None and self.weight.ndim != 1:
            raise ValueError(f"weight: expected a 1-D array (C,), got shape {tuple(self.weight.shape)}")
        # The fused kernel knows no ignore_index: it may run only where no valid label can equal it.
        self._fused = (self.weight is None and self.label_smoothing == 0.0 and reduction != "none"
                       and self.ignore_index < 0)
        self._grads = {}
        self._validated = False

    _grad = MSELoss._grad

    def config(self):
        return {"type": "CrossEntropyLoss", "reduction": self.reduction, "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing,
                "weight": None if self.weight is None else self.backend.to_numpy(self.weight).tolist()}

    def __call__(self, logits, labels):
        ops, grad = self.backend.ops, self._grad(logits.shape)
        if self._fused:
            result = ops.softmax_cross_entropy(logits, labels, reduction=self.reduction, out_grad=grad,
                                               validate=not self._validated)
        else:
            result = ops.cross_entropy(logits, labels, self.weight, None, self.ignore_index, None, self.reduction,
                                       self.label_smoothing, out_grad=grad, validate=not self._validated)
        self._validated = True
        return result


LOSSES = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss}
