"""The models the CLI trains: the small CNN (the linear regression is one nn.Linear)."""

import numpy as np

from pyfast import _checks, nn


def cnn_model(backend=None, seed=0, classes=10, image_size=28, conv_version=None):
    """conv(1->32, 3x3, pad 1) ReLU maxpool 2, conv(32->64, 3x3, pad 1) ReLU maxpool 2,
    Linear(64 * (size/4)^2 -> 128) ReLU, Linear(128 -> classes), PyTorch's default init.
    ``conv_version``: the conv kernels on the GPU (pyfast.ops.CONV2D_VERSIONS)."""
    backend = nn.get_backend(backend)
    image_size = _checks.expect_int("image_size", image_size, 4)  # two 2x2 poolings
    rng = np.random.default_rng(seed)
    features = 64 * (image_size // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, rng=rng, backend=backend, version=conv_version), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(32, 64, 3, padding=1, rng=rng, backend=backend, version=conv_version), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Flatten(backend=backend),
        nn.Linear(features, 128, activation="relu", rng=rng, backend=backend),
        nn.Linear(128, classes, rng=rng, backend=backend),
        input_shape=(1, image_size, image_size),
    )
