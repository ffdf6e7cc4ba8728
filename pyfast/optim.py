"""Optimizers over a model's parameters, each step one fused update (pyfast.ops.sgd_step /
adam_step on the GPU, their NumPy twins on the CPU backend), and per-epoch learning-rate
schedules. An optimizer takes a model or its parameters (``Adam(model.parameters())``, as in
PyTorch); gradients are the arrays each layer's backward overwrites, so there is no
zero_grad(). Hyperparameters are checked when the optimizer is built, with the ops' own rules.
"""

import math

import numpy as np

from pyfast import _checks
from pyfast.nn import Module, _host, get_backend, owner_of


def _trained_arrays(params):
    """(backend, parameter arrays, gradient arrays, the layers writing those gradients) of a
    model or of an iterable of its parameter arrays (model.parameters(), or a selection of them)."""
    if isinstance(params, Module):
        return params.backend, params.parameters(), params.gradients(), [params]
    if isinstance(params, (str, bytes, dict)) or hasattr(params, "__array_interface__") \
            or hasattr(params, "__cuda_array_interface__") or not hasattr(params, "__iter__"):
        raise TypeError(f"params: expected a model or an iterable of its parameter arrays (model.parameters()), "
                        f"got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError("params: an empty list: nothing to optimize")
    grads, backends, layers = [], set(), []
    for i, param in enumerate(params):
        if isinstance(param, dict):
            raise TypeError(f"params[{i}]: parameter groups (dicts) are not supported; pass the arrays")
        layer, grad = owner_of(param)
        if layer is None:
            raise TypeError(f"params[{i}]: not a parameter of a pyfast layer (an optimizer needs the gradient "
                            f"array the layer's backward writes); pass model.parameters() or the model")
        if any(param is other for other in params[:i]):
            raise ValueError(f"params[{i}]: listed twice")
        grads.append(grad)
        layers.append(layer)
        backends.add(layer.backend.name)
    if len(backends) > 1:
        raise ValueError(f"params: parameters of several backends ({sorted(backends)})")
    return get_backend(backends.pop()), params, grads, layers


class Optimizer:
    """Base: the parameters and their gradients, hyperparameters, state dicts."""

    def __init__(self, params):
        # The layers are kept: their backward writes the gradients this optimizer reads.
        self.backend, self.params, self.grads, self._layers = _trained_arrays(params)

    def _zeros_like_params(self):
        return [self.backend.xp.zeros_like(p) for p in self.params]

    def hyperparameters(self):
        """{name: value} of the settings each step passes to the update kernel (a CUDA graph
        captured with one set replays it: pyfast.train.fit recaptures when they change)."""
        raise NotImplementedError

    def _set_hyperparameters(self, values):
        raise NotImplementedError

    def _state_arrays(self):
        """{name: list of per-parameter state arrays} (absent states: no entry)."""
        return {}

    def state_dict(self):
        """{"type", "hyperparameters", "state": {name: [arrays]}, ...}: the state arrays
        themselves, as PyTorch's state_dict holds them (pyfast.train.save writes them)."""
        return {"type": type(self).__name__, "hyperparameters": self.hyperparameters(), "state": self._state_arrays()}

    def load_state_dict(self, state):
        """Restores hyperparameters and states from state_dict()'s output (NumPy or CuPy arrays),
        copying into this optimizer's arrays in place. Nothing changes unless everything fits."""
        if not isinstance(state, dict) or not {"type", "hyperparameters", "state"} <= state.keys() \
                or not isinstance(state["hyperparameters"], dict) or not isinstance(state["state"], dict):
            raise TypeError("state: expected the dict of an optimizer's state_dict()")
        if state["type"] != type(self).__name__:
            raise ValueError(f"state: saved from a {state['type']} optimizer, this one is {type(self).__name__}")
        previous = self.hyperparameters()
        self._set_hyperparameters(state["hyperparameters"])  # checks them; the states may depend on them
        try:
            arrays = self._state_arrays()
            checked = {}
            for name, own in arrays.items():
                stored = state["state"].get(name)
                if stored is None or len(stored) != len(own):
                    raise ValueError(f"state['state'][{name!r}]: expected {len(own)} arrays, one per parameter, got "
                                     f"{'none' if stored is None else len(stored)}")
                checked[name] = [_host(f"state['state'][{name!r}][{i}]", value) for i, value in enumerate(stored)]
                for i, (value, array) in enumerate(zip(checked[name], own)):
                    if value.shape != array.shape:
                        raise ValueError(f"state['state'][{name!r}][{i}]: expected shape {array.shape}, "
                                         f"got {value.shape}")
            self._load_extra(state)
        except Exception:
            self._set_hyperparameters(previous)
            raise
        for name, values in checked.items():
            for value, array in zip(values, arrays[name]):
                array[...] = self.backend.asarray(value)
        return self

    def _load_extra(self, state):
        """Restores what is not a per-parameter array (Adam's step count)."""


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0): momentum, Nesterov, L2 weight decay."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params)
        self.velocity = None
        self._set_hyperparameters(dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def hyperparameters(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)

    def _set_hyperparameters(self, values):
        values = {name: values.get(name, default) for name, default in
                  (("lr", None), ("momentum", 0.0), ("weight_decay", 0.0), ("nesterov", False))}
        _checks.sgd_hyperparameters(**values)
        self.lr, self.momentum, self.weight_decay, self.nesterov = (values[k] for k in
                                                                    ("lr", "momentum", "weight_decay", "nesterov"))
        if self.momentum and self.velocity is None:
            self.velocity = self._zeros_like_params()

    def _state_arrays(self):
        return {"velocity": self.velocity} if self.momentum else {}

    def step(self):
        self.backend.ops.sgd_step(self.params, self.grads, lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay, nesterov=self.nesterov,
                                  velocity=self.velocity if self.momentum else None)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient), bias-corrected.

    ``capturable=True`` keeps the step count on the device (PyTorch's option of that name):
    each step() then launches the same work with the same arguments, so a training step can
    be captured in a CUDA graph and replayed (pyfast.graph); ``steps`` reads the count back."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, capturable=False):
        super().__init__(params)
        _checks.expect_bool("capturable", capturable)
        self._set_hyperparameters(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.exp_avg, self.exp_avg_sq = self._zeros_like_params(), self._zeros_like_params()
        self.capturable = capturable
        self._steps = self.backend.xp.zeros((), np.int64) if capturable else 0

    def hyperparameters(self):
        return dict(lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    def _set_hyperparameters(self, values):
        values = {name: values.get(name, default) for name, default in
                  (("lr", None), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0))}
        _checks.adam_hyperparameters(1, decoupled=self.decoupled, **values)
        self.lr, self.eps, self.weight_decay = values["lr"], values["eps"], values["weight_decay"]
        self.betas = tuple(values["betas"])

    def _state_arrays(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def state_dict(self):
        return dict(super().state_dict(), steps=self.steps)

    def _load_extra(self, state):
        steps = state.get("steps")
        if not _checks.is_integer(steps) or steps < 0:
            raise ValueError(f"state['steps']: expected the count of updates done (an int >= 0), got {steps!r}")
        if self.capturable:
            self._steps[...] = steps
        else:
            self._steps = int(steps)

    @property
    def steps(self):
        """Updates done so far (a device read when capturable)."""
        return int(self._steps)

    def step(self):
        if not self.capturable:
            self._steps += 1
        self.backend.ops.adam_step(self.params, self.grads, self.exp_avg, self.exp_avg_sq, step=self._steps,
                                   lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                                   decoupled=self.decoupled)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay (default 1e-2)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, capturable=capturable)


# ------------------------------------------------------------------ learning-rate schedules
class LRScheduler:
    """A per-epoch learning-rate schedule, as PyTorch's lr_scheduler: built after the optimizer
    (whose lr becomes the base), step() once at the end of each epoch; the optimizer's lr is
    then ``lr_at(epoch)``, a closed form of the base and the epoch count (so a resumed run
    gets exactly the rates of an uninterrupted one)."""

    SETTINGS = ()  # the constructor's arguments after the optimizer, kept in state_dict()

    def __init__(self, optimizer, **settings):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a pyfast optimizer, got {type(optimizer).__name__}")
        self.__dict__.update(self._checked(**settings))
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self._apply()

    @staticmethod
    def _checked(**settings):
        """SETTINGS after their checks, as a dict."""
        return settings

    def lr_at(self, epoch):
        raise NotImplementedError

    def _apply(self):
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [self.optimizer.lr]

    def state_dict(self):
        settings = {name: getattr(self, name) for name in self.SETTINGS}
        return dict(type=type(self).__name__, base_lr=self.base_lr, last_epoch=self.last_epoch, **settings)

    def load_state_dict(self, state):
        """Restores base lr, epoch count and settings from state_dict()'s output, and sets the
        optimizer's lr for that epoch."""
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            raise ValueError(f"state: expected the state_dict() of a {type(self).__name__}, got {state!r}")
        base_lr = _checks.expect_nonnegative("state['base_lr']", state.get("base_lr"))
        last_epoch = _checks.expect_int("state['last_epoch']", state.get("last_epoch"), 0)
        settings = self._checked(**{name: state.get(name) for name in self.SETTINGS})
        self.__dict__.update(settings)
        self.base_lr, self.last_epoch = base_lr, last_epoch
        self._apply()
        return self


class StepLR(LRScheduler):
    """lr = base * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR."""

    SETTINGS = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    @staticmethod
    def _checked(step_size, gamma):
        return dict(step_size=_checks.expect_int("step_size", step_size, 1),
                    gamma=_checks.expect_nonnegative("gamma", gamma))

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2, the closed form of
    torch.optim.lr_scheduler.CosineAnnealingLR (base at epoch 0, eta_min at epoch T_max)."""

    SETTINGS = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):  # noqa: N803 - PyTorch's name
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    @staticmethod
    def _checked(T_max, eta_min):  # noqa: N803
        return dict(T_max=_checks.expect_int("T_max", T_max, 1), eta_min=_checks.expect_nonnegative("eta_min", eta_min))

    def lr_at(self, epoch):
        # Written from the base down, so that epoch 0 gives the base lr exactly.
        return self.base_lr - (self.base_lr - self.eta_min) * (1 - math.cos(math.pi * epoch / self.T_max)) / 2
