"""Checkpoints: save() writes a model's architecture and weights, with what continuing its
training needs (optimizer, schedule, epoch, history), to one .npz archive; load_checkpoint()
reads one back, checked; load() rebuilds the model for inference."""

import errno
import json
import os

import numpy as np

from pyfast import _checks, nn
from pyfast.train.loop import History

CHECKPOINT_FORMAT = "pyfast-checkpoint-1"  # older checkpoints have no format entry (and param_<i> arrays)


def save(model, path, *, optimizer=None, scheduler=None, epoch=None, history=None, **metadata):
    """Writes a checkpoint: the architecture and weights (enough for load() and inference),
    JSON-able ``metadata`` (e.g. the normalisation statistics), and, to continue training,
    the optimizer's and scheduler's states, the epochs trained and the history. Written to a
    temporary file and renamed, so an interrupted save never leaves a broken checkpoint.
    ".npz" is appended when `path` has no suffix (another suffix is a ValueError: a checkpoint
    is an .npz archive); returns the path written."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if not suffix:
        path += ".npz"
    elif suffix.lower() != ".npz":
        raise ValueError(f"path: a checkpoint is an .npz archive; give a name ending in .npz, not {suffix}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot save a checkpoint into {folder}: no such folder", path)
    to_numpy = model.backend.to_numpy
    arrays = {f"param.{name}": to_numpy(param) for name, param in model.named_parameters()}
    training = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        for name, values in state.pop("state").items():
            arrays.update({f"optimizer.{name}.{i}": to_numpy(value) for i, value in enumerate(values)})
        training["optimizer"] = state
    if scheduler is not None:
        training["scheduler"] = scheduler.state_dict()
    if epoch is not None:
        training["epoch"] = _checks.expect_int("epoch", epoch, 0)
    if history is not None:
        training["history"] = dict(history)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        np.savez(f, format=CHECKPOINT_FORMAT, config=json.dumps(model.config()), metadata=json.dumps(metadata),
                 training=json.dumps(training), **arrays)
    os.replace(partial, path)
    return path


class _NotACheckpoint(ValueError):
    def __init__(self, path, what):
        super().__init__(f"{path}: not a pyfast checkpoint ({what})")


def load_checkpoint(path):
    """Everything save() wrote, checked, as a dict: "config" (the architecture), "model" ({name:
    NumPy array}, for Module.load_state_dict), "metadata", and "optimizer" (a state dict with
    NumPy arrays, for Optimizer.load_state_dict), "scheduler", "epoch", "history" (a History)
    where saved, else None. A file that is not one raises ValueError("PATH: not a pyfast
    checkpoint (what is wrong)"); a missing file FileNotFoundError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a folder, not a pyfast checkpoint (.npz file)", path)
    with open(path, "rb") as f:  # FileNotFoundError, PermissionError as they are
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise _NotACheckpoint(path, "a single NumPy array (.npy), not an .npz archive")
    if not magic.startswith(b"PK"):
        raise _NotACheckpoint(path, "not a NumPy .npz archive (a zip file)")
    try:
        stored = np.load(path)
    except Exception as error:  # noqa: BLE001 - a damaged archive
        raise _NotACheckpoint(path, f"not a readable NumPy .npz archive: {error}") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise _NotACheckpoint(path, "not a NumPy .npz archive")
    with stored:
        entries = {}
        for key in stored.files:
            try:
                entries[key] = stored[key]
            except Exception as error:  # noqa: BLE001 - pickled objects, truncated members
                raise _NotACheckpoint(path, f"entry {key!r} cannot be read: {error}") from None

    def parse(key, required):
        if key not in entries:
            if required:
                raise _NotACheckpoint(path, f"no {key!r} entry; it holds {sorted(entries)}")
            return {}
        try:
            return json.loads(str(entries[key]))
        except ValueError as error:
            raise _NotACheckpoint(path, f"its {key!r} entry is not valid JSON: {error}") from None

    if "format" in entries and str(entries["format"]) != CHECKPOINT_FORMAT:
        raise _NotACheckpoint(path, f"format {str(entries['format'])!r}; this pyfast reads {CHECKPOINT_FORMAT!r}")
    config, metadata, training = parse("config", True), parse("metadata", False), parse("training", False)
    epoch = training.get("epoch")
    if epoch is not None and not (_checks.is_integer(epoch) and epoch >= 0):
        raise _NotACheckpoint(path, f"its epoch {epoch!r} is not a count of epochs")
    try:
        model = nn.from_config(config, backend="numpy")  # checks the architecture; gives the names and shapes
    except Exception as error:  # noqa: BLE001 - any failure to rebuild the model from its config
        raise _NotACheckpoint(path, f"its config does not describe a pyfast model: {type(error).__name__}: {error}") \
            from None
    names = [name for name, _ in model.named_parameters()]
    params = {key[len("param."):]: value for key, value in entries.items() if key.startswith("param.")}
    legacy = sorted((k for k in entries if k.startswith("param_") and k[6:].isdigit()), key=lambda k: int(k[6:]))
    if not params and legacy:  # written before parameters were saved by name: in order
        if len(legacy) != len(names):
            raise ValueError(f"{path}: {len(legacy)} stored arrays for a model of {len(names)} parameters")
        params = dict(zip(names, (entries[k] for k in legacy)))
    if sorted(params) != sorted(names):
        raise ValueError(f"{path}: stored parameters {sorted(params)} do not match its model's {names}")
    for name, param in model.named_parameters():
        if params[name].shape != param.shape:
            raise ValueError(f"{path}: param.{name} has shape {params[name].shape}, the model expects {param.shape}")
    optimizer = training.get("optimizer")
    if optimizer is not None:
        state = {}
        for key, value in entries.items():
            if key.startswith("optimizer."):
                name, _, index = key[len("optimizer."):].rpartition(".")
                if not name or not index.isdigit():
                    raise _NotACheckpoint(path, f"entry {key!r} names no optimizer state and index")
                state.setdefault(name, {})[int(index)] = value
        optimizer = dict(optimizer, state={name: [values[i] for i in sorted(values)] for name, values in state.items()})
    history = training.get("history")
    try:
        history = History(history) if history is not None else None
    except ValueError as error:
        raise _NotACheckpoint(path, str(error)) from None
    return {"config": config, "model": params, "metadata": metadata, "optimizer": optimizer,
            "scheduler": training.get("scheduler"), "epoch": epoch, "history": history}


def load(path, backend=None):
    """(model, metadata) rebuilt from save()'s file, on `backend` (default: cuda if usable)."""
    checkpoint = load_checkpoint(path)
    model = nn.from_config(checkpoint["config"], backend=backend)
    model.load_state_dict(checkpoint["model"])
    return model, checkpoint["metadata"]
