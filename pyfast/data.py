"""Datasets for the trainer, all offline: the handwritten digits shipped with pyfast (real
data, 1797 8x8 images, optionally resized to 28x28), MNIST / Fashion-MNIST from files the
user already has (IDX, optionally gzipped, or .npz), and synthetic regression and image data.
Plus normalisation, seeded shuffling and splitting, batching (the last partial batch kept)
and random-shift augmentation. Images are float32 (N, 1, H, W); labels int64 (N,); every array
handed out is C-contiguous, as the ops take it.

The digits (``pyfast/digits.npz``, 45 kB) are the test set of the UCI "Optical Recognition of
Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), the same 1797 images
and labels as scikit-learn's ``load_digits``: pixels are counts 0..16 of the on pixels in
4x4 blocks of a 32x32 bitmap. Shipped so that the default training run needs nothing beyond
NumPy.
"""

import gzip
import os
import struct
import zipfile
from importlib import resources

import numpy as np

from pyfast import reference


# ---------------------------------------------------------------------------- datasets
def resize_bilinear(images, size):
    """(N, H, W) -> (N, size, size) by bilinear interpolation (pixel centres aligned)."""
    n, h, w = images.shape

    def axis(old, new):
        position = (np.arange(new) + 0.5) * old / new - 0.5
        low = np.clip(np.floor(position).astype(int), 0, old - 1)
        high = np.clip(low + 1, 0, old - 1)
        weight = np.clip(position - low, 0.0, 1.0)
        return low, high, weight

    r0, r1, rw = axis(h, size)
    c0, c1, cw = axis(w, size)
    rows = images[:, r0, :] * (1 - rw)[None, :, None] + images[:, r1, :] * rw[None, :, None]
    # C order: indexing the last axis lays the result out column-major
    return np.ascontiguousarray(rows[:, :, c0] * (1 - cw) + rows[:, :, c1] * cw, dtype=np.float32)


DIGITS_FILE = "digits.npz"


def load_digits(size=28):
    """The handwritten digits shipped inside the package (no download, no other dependency),
    scaled to [0, 1] and resized from 8x8 to size x size (size=8 keeps them as they are)."""
    with resources.files("pyfast").joinpath(DIGITS_FILE).open("rb") as f, np.load(f) as stored:
        images, labels = stored["images"], stored["labels"]
    images = images.astype(np.float32) / 16.0
    if size != 8:
        images = resize_bilinear(images, size)
    return images[:, None], labels.astype(np.int64)


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zeros, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zeros != 0 or dtype_code != 0x08:
            raise ValueError("not an IDX file of unsigned bytes")
        shape = struct.unpack(">" + "I" * ndim, data[4: 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (ValueError, struct.error, EOFError, gzip.BadGzipFile) as error:  # short, damaged or another format
        raise ValueError(f"{path}: not a readable IDX file of unsigned bytes ({error})") from None


MNIST_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_CLASSES = 10


def _check_mnist_split(path, names, images, labels, classes):
    """The problems a file of images and labels can have, each as one ValueError naming it."""
    x_name, y_name = names
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[1] != 1):
        raise ValueError(f"{path}: {x_name} must hold grey images, (N, H, W) or (N, 1, H, W); got shape "
                         f"{images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{path}: {y_name} must be one label per image, (N,); got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{path}: {x_name} has {len(images)} images but {y_name} has {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{path}: {x_name} holds no images")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: {y_name} must be integer class indices, got dtype {labels.dtype} (float labels "
                         f"would be truncated); store them as integers")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ValueError(f"{path}: {y_name} must lie in [0, {classes}) (the CNN's {classes} classes); got values "
                         f"from {low} to {high}")
    if not np.isfinite(images).all():
        raise ValueError(f"{path}: {x_name} holds NaN or infinite values")


def _read_npz(path):
    """{name: array} of an .npz file, or a ValueError saying what the file is instead. Never
    with pickled objects, and never with numpy's advice to allow them (unsafe for a file one
    did not make)."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(16)
        if start.startswith(b"PK"):
            raise ValueError(f"{path}: not a readable NumPy .npz archive (a damaged or cut-short zip file)")
        raise ValueError(f"{path}: not an .npz archive (np.savez writes a zip file; this one starts with {start!r})")
    stored = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            for key in f.files:
                try:
                    stored[key] = f[key]
                except ValueError as error:
                    if "pickle" not in str(error):
                        raise
                    raise ValueError(f"{path}: {key} holds Python objects (an object array, pickled), which pyfast "
                                     f"does not load; store numeric arrays (images as integers or floats)") from None
    except ValueError as error:
        if str(error).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: not a readable NumPy .npz archive ({type(error).__name__}: {error})") from None
    except Exception as error:  # noqa: BLE001 - a damaged archive, whatever np.load raises for it
        raise ValueError(f"{path}: not a readable NumPy .npz archive ({type(error).__name__}: {error})") from None
    return stored


def load_mnist(path, classes=MNIST_CLASSES):
    """MNIST or Fashion-MNIST from a folder of the four IDX files (train-images-idx3-ubyte,
    train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; optionally .gz)
    or an .npz holding the arrays x_train, y_train, x_test, y_test (images (N, H, W) or
    (N, 1, H, W); labels integers in [0, classes)). Returns ((x_train, y_train), (x_test,
    y_test)) with images scaled to [0, 1]. Nothing is downloaded. A file that does not hold
    that is a ValueError saying what is wrong with it."""
    if os.path.isfile(path) and path.endswith(".npz"):
        stored = _read_npz(path)
        missing = [key for key in MNIST_NPZ_KEYS if key not in stored]
        if missing:
            raise ValueError(f"{path}: an .npz for mnist:PATH needs the arrays {', '.join(MNIST_NPZ_KEYS)}; it lacks "
                             f"{', '.join(missing)} (it holds {', '.join(sorted(stored)) or 'none'})")
        parts = [stored[k] for k in MNIST_NPZ_KEYS]
    else:
        def find(stem):
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
                if os.path.exists(os.path.join(path, name)):
                    return os.path.join(path, name)
            raise FileNotFoundError(f"{path}: no {stem}[.gz] (MNIST IDX files are read, never downloaded)")

        parts = [_read_idx(find(stem)) for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    x_train, y_train, x_test, y_test = parts
    _check_mnist_split(path, ("x_train", "y_train"), x_train, y_train, classes)
    _check_mnist_split(path, ("x_test", "y_test"), x_test, y_test, classes)
    prepare = lambda x: (x.astype(np.float32) / 255.0).reshape(len(x), 1, *x.shape[-2:])  # noqa: E731
    return (prepare(x_train), y_train.astype(np.int64)), (prepare(x_test), y_test.astype(np.int64))


def synthetic_regression(samples=100, features=2, seed=0):
    """The classic tutorial's data: X (samples, features) and y (samples, 1), both standard
    normal (the best fit is least squares on noise)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((samples, features)).astype(np.float32),
            rng.standard_normal((samples, 1)).astype(np.float32))


def synthetic_images(samples=2000, classes=10, size=28, seed=0, noise=0.3):
    """Learnable images: each class a fixed random pattern, each sample its pattern plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((classes, size, size)).astype(np.float32)
    labels = rng.integers(0, classes, samples)
    images = patterns[labels] + noise * rng.standard_normal((samples, size, size)).astype(np.float32)
    return images[:, None].astype(np.float32), labels.astype(np.int64)


# ------------------------------------------------------------------------- preparation
def normalize(x, mean=None, std=None):
    """(x - mean) / std with statistics from x unless given (use the training set's for all
    splits). Returns (normalised x, mean, std)."""
    mean = float(x.mean()) if mean is None else mean
    std = float(x.std()) if std is None else std
    return np.ascontiguousarray((x - mean) / (std if std > 0 else 1.0), dtype=np.float32), mean, std


def split(x, y, fractions=(0.8, 0.1, 0.1), seed=0):
    """Shuffled (seeded) train / validation / test split by fractions summing to 1."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions: expected three non-negative fractions summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(fractions[0] * len(x)))
    n_val = int(round(fractions[1] * len(x)))
    parts = np.split(order, [n_train, n_train + n_val])
    return tuple((x[p], y[p]) for p in parts)


def shift_images(images, shifts):
    """Image i moved by shifts[i] = (rows, columns), zero-filled (as pyfast.ops.gather_batch
    does on the GPU)."""
    out = np.zeros_like(images)
    for i, (dy, dx) in enumerate(shifts):
        reference.shift_image_into(out[i], images[i], dy, dx)
    return out


def random_shift(images, max_shift, rng):
    """Each image moved by up to max_shift pixels in each direction, zero-filled (a standard
    augmentation for digits)."""
    if max_shift <= 0:
        return images
    return shift_images(images, rng.integers(-max_shift, max_shift + 1, size=(len(images), 2)))


def epoch_plan(n, *, shuffle=False, rng=None, augment=0):
    """(order, shifts) of one epoch of n samples: the order they are visited in (int64; drawn
    from `rng` when shuffling) and the (rows, columns) shift of the sample at each position
    (int32 (n, 2), drawn after the order; None without augmentation). Batches on the host
    (batches()) and on the GPU (pyfast.train with the data on the device) both follow it."""
    rng = rng if rng is not None else np.random.default_rng(0)
    order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
    shifts = rng.integers(-augment, augment + 1, size=(n, 2)).astype(np.int32) if augment > 0 else None
    return order, shifts


def batches(x, y, batch_size, *, shuffle=False, rng=None, augment=0):
    """(x, y) batches in order or shuffled (seeded rng), the last partial batch included;
    `augment` > 0 applies random shifts of up to that many pixels (epoch_plan)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order, shifts = epoch_plan(len(x), shuffle=shuffle, rng=rng, augment=augment)
    for start in range(0, len(x), batch_size):
        index = order[start: start + batch_size]
        xb = x[index]
        if shifts is not None:
            xb = shift_images(xb, shifts[start: start + batch_size])
        yield np.ascontiguousarray(xb), np.ascontiguousarray(y[index])
