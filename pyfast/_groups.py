"""Grouped convolution (torch's ``groups``) as one groups=1 convolution per group, for every
backend: the input's channels [i C/g, (i+1) C/g) meet the weight's rows [i K/g, (i+1) K/g)
and give the output's channels [i K/g, (i+1) K/g). The kernels compute groups=1; a slice of
channels of an NCHW array is not contiguous, so each group's input (and gradient) slice is
copied first (``xp``: numpy or cupy). One launch chain per group: right for a few wide groups,
slow for depthwise (groups = C)."""


def _slices(groups, channels):
    size = channels // groups
    return [slice(i * size, (i + 1) * size) for i in range(groups)]


def forward(conv, xp, x, w, bias, groups, out, **options):
    """out[:, group's K] = conv(x[:, group's C], w[group's K], bias[group's K], **options)."""
    for cs, ks in zip(_slices(groups, x.shape[1]), _slices(groups, w.shape[0])):
        out[:, ks] = conv(xp.ascontiguousarray(x[:, cs]), w[ks], None if bias is None else bias[ks], **options)
    return out


def backward_input(grad_input, xp, dy, w, x_shape, groups, out, **options):
    """out[:, group's C] = the input gradient of the group's convolution."""
    n, c, h, width = x_shape
    for cs, ks in zip(_slices(groups, c), _slices(groups, w.shape[0])):
        out[:, cs] = grad_input(xp.ascontiguousarray(dy[:, ks]), w[ks], (n, c // groups, h, width), **options)
    return out


def backward_weight(grad_weight, xp, dy, x, w_shape, groups, out, out_bias, **options):
    """out[group's K] (and out_bias[group's K] when given) = the group's weight (and bias) gradient."""
    k, c_per_group, r, s = w_shape
    for cs, ks in zip(_slices(groups, x.shape[1]), _slices(groups, k)):
        dy_group, x_group = xp.ascontiguousarray(dy[:, ks]), xp.ascontiguousarray(x[:, cs])
        result = grad_weight(dy_group, x_group, (k // groups, c_per_group, r, s), bias=out_bias is not None,
                             **options)
        if out_bias is None:
            out[ks] = result
        else:
            out[ks], out_bias[ks] = result
    return out if out_bias is None else (out, out_bias)
