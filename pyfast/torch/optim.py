"""torch.optim.Adam / AdamW on pyfast's fused multi-tensor Adam kernel (``pyfast.ops.adam_step``:
one launch per 48 tensors, PyTorch's bias correction and update order). The state has
torch.optim.Adam's keys (``step``, ``exp_avg``, ``exp_avg_sq``), so ``state_dict`` moves between
the two."""

import torch

from pyfast import ops
from pyfast.torch._bridge import array, check_tensor, launching


class Adam(torch.optim.Optimizer):
    """torch.optim.Adam(params, lr, betas, eps, weight_decay) (weight decay added to the
    gradient); float32 parameters on pyfast's device, dense gradients. ``amsgrad``,
    ``maximize``, ``foreach`` / ``fused`` and the other flags of PyTorch's are not taken."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        for group in self.param_groups:
            by_step = {}  # parameters may have taken different numbers of steps (a grad missing once)
            for index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                check_tensor(f"optim.{name}", f"params[{index}]", p)
                if p.grad.is_sparse:
                    raise TypeError(f"pyfast.torch.optim.{name}: params[{index}].grad: sparse gradients are not "
                                    f"supported")
                if not p.is_contiguous():
                    raise ValueError(f"pyfast.torch.optim.{name}: params[{index}]: must be contiguous (the kernel "
                                     f"updates it in place)")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["step"] += 1
                by_step.setdefault(int(state["step"].item()), []).append((p, state))
            for step, entries in by_step.items():
                with launching(f"optim.{name}", entries[0][0]):
                    ops.adam_step([array(p) for p, _ in entries], [array(p.grad.contiguous()) for p, _ in entries],
                                  [array(s["exp_avg"]) for _, s in entries],
                                  [array(s["exp_avg_sq"]) for _, s in entries], step=step, lr=group["lr"],
                                  betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
                                  decoupled=self.decoupled)
                # Written behind autograd's back (DLPack): bumped as an in-place op would, so a
                # graph that saved a parameter refuses to backpropagate through the old value.
                torch.autograd.graph.increment_version([p for p, _ in entries])
        return loss


class AdamW(Adam):
    """torch.optim.AdamW(params, lr, betas, eps, weight_decay=0.01): weight decay decoupled from
    the gradient."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


__all__ = ["Adam", "AdamW"]
