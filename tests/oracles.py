"""Independent oracles for the tests: dense tensors in numpy float64."""

import numpy as np


def dense(weights, factors, order):
    w = np.asarray(weights, np.float64)
    u = np.asarray(factors, np.float64)
    out = np.zeros((u.shape[1],) * order)
    for c, v in zip(w, u):
        t = v
        for _ in range(order - 1):
            t = np.multiply.outer(t, v)
        out += c * t
    return out
