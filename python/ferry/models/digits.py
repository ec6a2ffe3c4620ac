"""The demo's model: handwritten digits (scikit-learn's bundled 8×8 set, resized to 28×28
and centred like MNIST), a multinomial logistic regression trained once and cached.
Prediction is a numpy matrix product, so the model is cheap next to its transport.

    python -m ferry.models.digits prepare --cache DIR   # train if needed, print paths as JSON
    python -m ferry.worker ferry.models.digits          # serve it
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

CACHE = os.environ.get("FERRY_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ferry"))
VERSION = 1


def to_mnist(images8: np.ndarray) -> np.ndarray:
    """8×8 images with values 0–16 → 28×28 uint8: scaled to 20×20, centred with a 4-pixel margin."""
    from scipy.ndimage import zoom

    out = np.zeros((len(images8), 28, 28), dtype=np.uint8)
    for i, img in enumerate(images8):
        big = zoom(img.astype(np.float64) / 16.0, 20 / 8, order=1)
        out[i, 4:24, 4:24] = np.clip(big * 255.0, 0, 255).astype(np.uint8)
    return out


def _paths(cache: str) -> dict:
    return {
        "weights": os.path.join(cache, f"digits-v{VERSION}-weights.npz"),
        "images": os.path.join(cache, f"digits-v{VERSION}-test-images.npy"),
        "labels": os.path.join(cache, f"digits-v{VERSION}-test-labels.npy"),
    }


def prepare(cache: str = CACHE) -> dict:
    """Trains and caches the model and the held-out test set unless already cached."""
    paths = _paths(cache)
    if not all(os.path.exists(p) for p in paths.values()):
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = to_mnist(digits.images)
        x_train, x_test, y_train, y_test = train_test_split(
            images, digits.target, test_size=0.25, random_state=7, stratify=digits.target)
        clf = LogisticRegression(max_iter=2000, C=0.5)
        clf.fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)
        os.makedirs(cache, exist_ok=True)
        tmp = paths["weights"] + ".tmp.npz"
        np.savez(tmp, w=clf.coef_.astype(np.float32), b=clf.intercept_.astype(np.float32), train_size=len(x_train))
        os.replace(tmp, paths["weights"])
        np.save(paths["images"] + ".tmp.npy", x_test)
        os.replace(paths["images"] + ".tmp.npy", paths["images"])
        np.save(paths["labels"] + ".tmp.npy", y_test.astype(np.int64))
        os.replace(paths["labels"] + ".tmp.npy", paths["labels"])
    w = np.load(paths["weights"])
    return {**paths, "train_size": int(w["train_size"]), "model": "logistic regression on 784 pixels"}


def setup():
    """Loads the cached weights; returns the prediction function the worker serves."""
    paths = prepare(CACHE)
    weights = np.load(paths["weights"])
    w = weights["w"].T.copy()  # (784, 10)
    b = weights["b"]

    def predict(images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), -1).astype(np.float32) * (1 / 255.0)
        return np.argmax(x @ w + b, axis=1).astype(np.int64)

    return predict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferry.models.digits")
    p.add_argument("command", choices=["prepare"])
    p.add_argument("--cache", default=None)
    args = p.parse_args(argv)
    print(json.dumps(prepare(args.cache or CACHE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
