"""Loss and accuracy curves of a History (matplotlib, an optional dependency)."""


def history_figure(history):
    """A matplotlib Figure of the loss (and accuracy) per epoch, train and validation (raises
    ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history["epoch"]
    has_accuracy = any(a is not None for a in history["accuracy"])
    has_val = any(v is not None for v in history["val_loss"])
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 4), squeeze=False)
    panels = [("loss", "loss", "val_loss")] + ([("accuracy", "accuracy", "val_accuracy")] if has_accuracy else [])
    for ax, (title, train_key, val_key) in zip(axes[0], panels):
        ax.plot(epochs, history[train_key], marker="o", label="train")
        if has_val:
            ax.plot(epochs, history[val_key], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=title, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history, path):
    """Loss (and accuracy) per epoch as a PNG; returns False when matplotlib is missing."""
    try:
        fig = history_figure(history)
    except ImportError:
        return False
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
