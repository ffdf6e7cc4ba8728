"""Optimizers over a model's parameters, each step one fused update (pyfast.ops.sgd_step /
adam_step on the GPU, their NumPy twins on the CPU backend). Gradients are read from
``model.gradients()``, which every backward overwrites, so there is no zero_grad()."""

import numpy as np

from pyfast.nn import get_backend


class Optimizer:
    def __init__(self, model):
        self.model = model
        self.backend = get_backend(model.backend)
        self.params = model.parameters()
        self.grads = model.gradients()

    def _zeros_like_params(self):
        return [self.backend.xp.zeros_like(p) for p in self.params]


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0): momentum, Nesterov, L2 weight decay."""

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(model)
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.velocity = self._zeros_like_params() if momentum else None

    def step(self):
        self.backend.ops.sgd_step(self.params, self.grads, lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay, nesterov=self.nesterov, velocity=self.velocity)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient), bias-corrected.

    ``capturable=True`` keeps the step count on the device (PyTorch's option of that name):
    each step() then launches the same work with the same arguments, so a training step can
    be captured in a CUDA graph and replayed (pyfast.graph); ``steps`` reads the count back."""

    decoupled = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, capturable=False):
        super().__init__(model)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg, self.exp_avg_sq = self._zeros_like_params(), self._zeros_like_params()
        self.capturable = capturable
        self._steps = self.backend.xp.zeros((), np.int64) if capturable else 0

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

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capturable=False):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, capturable=capturable)
