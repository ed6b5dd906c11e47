"""Bad-input and crash audit: what a new user meets when they get something wrong.

Tries a few hundred wrong calls of the Python API and of ``jaxtd run`` / ``jaxtd show`` and sorts
each outcome into

- ``clear``: a ``ValueError``/``TypeError`` (CLI: exit 2) whose one-line message names the
  argument or key;
- ``vague``: the right exception type, but the message does not name the argument (or spans
  lines);
- ``traceback``: any other exception (CLI: an internal error, exit 1);
- ``silent``: no error where one was due, or a result that disagrees with the oracle;
- ``correct``: an input the API documents as converted (e.g. integer factors) gave the oracle's
  answer;
- ``hang``: still running after the time box (API: ``--api-timeout`` seconds, by SIGALRM; CLI:
  60 s), e.g. a Python loop over a user-sized range.

The CLI rows also count ``exit 1`` on a user error (the ``traceback`` column of the ``cli`` and
``saved files`` areas): status 1 is for bugs in jaxtd only.

Then the crash trials: ``jaxtd run`` killed with SIGKILL at random moments and interrupted with
SIGINT, each resumed and compared with an uninterrupted run.

    python benchmarks/robustness.py            # prints the tables, ~3 minutes on 2 cores
    python benchmarks/robustness.py --no-crash # the input table only (~1 minute)
    python benchmarks/robustness.py --quick    # inputs and the exit policy only: no
                                               # damaged-file variants, no crash trials
    python benchmarks/robustness.py --save benchmarks/results/cpu-robustness.txt
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtd
from jaxtd import algorithms, lazy, targets

ROOT = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)
ERR = "error"


def _target(dim=6, rank=2, order=3):
    return targets.orthonormal(jax.random.key(1), dim, rank, order)


def _model(width=4, dim=6, order=3, factors=None, weights=None):
    w0 = jaxtd.init_factors(jax.random.key(2), width, dim, scale="standard")
    return jaxtd.SymCP(jnp.ones(width) if weights is None else weights,
                       w0 if factors is None else factors, order)


def _dense_loss(a, b):
    return 0.5 * float(np.sum((np.asarray(jaxtd.to_dense(a), np.float64)
                               - np.asarray(jaxtd.to_dense(b), np.float64)) ** 2))


def api_cases():
    """(area, label, thunk, expected): expected is a tuple of names one of which the error must
    name, or a callable checking a returned value (a documented conversion)."""
    t, m = _target(), _model()
    gd = algorithms.gd(0.1)
    run = lambda **kw: jaxtd.run(kw.pop("alg", gd), kw.pop("key", KEY), kw.pop("target", t),
                                 **{"width": 4, "steps": 10, "record_every": 5, **kw})
    cases = []

    def add(area, label, thunk, expected):
        cases.append((area, label, thunk, expected))

    # -- SymCP and losses -------------------------------------------------------------------
    f = np.asarray(m.factors)
    for dt in (np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.float16):
        add("SymCP", f"factors dtype {np.dtype(dt).name}",
            lambda dt=dt: jaxtd.loss(jaxtd.SymCP(np.ones(4), (f * 3).astype(dt), 3), t),
            ("factors", "dtype"))
        add("SymCP", f"weights dtype {np.dtype(dt).name}",
            lambda dt=dt: jaxtd.loss(jaxtd.SymCP(np.ones(4, dt), f, 3), t), ("weights", "dtype"))
    for order in (1, 0, -2, 2.0, "3", None, True):
        add("SymCP", f"order {order!r}", lambda o=order: jaxtd.SymCP(np.ones(4), f, o),
            ("order",))
    add("SymCP", "factors 1-D", lambda: jaxtd.SymCP(np.ones(4), f[0], 3), ("factors",))
    add("SymCP", "factors 3-D", lambda: jaxtd.SymCP(np.ones(4), f[None], 3), ("factors",))
    add("SymCP", "weights shape (3,)", lambda: jaxtd.SymCP(np.ones(3), f, 3), ("weights",))
    add("SymCP", "weights 2-D", lambda: jaxtd.SymCP(np.ones((4, 1)), f, 3), ("weights",))
    add("SymCP", "width 0: the zero tensor (oracle: loss = ||T*||^2 / 2)",
        lambda: float(jaxtd.loss(jaxtd.SymCP(np.ones(0, np.float32), f[:0], 3), t)),
        lambda out: math.isclose(out, 0.5 * float(jaxtd.inner(t, t)), rel_tol=1e-6))
    for bad in (np.nan, np.inf, -np.inf):
        add("SymCP", f"factor {bad}", lambda b=bad: jaxtd.loss(
            jaxtd.SymCP(np.ones(4), np.where(np.eye(4, 6) > 0, b, f), 3), t), ("factors",))
        add("SymCP", f"weight {bad}", lambda b=bad: jaxtd.loss(
            jaxtd.SymCP(np.array([1.0, b, 1.0, 1.0]), f, 3), t), ("weights",))
    add("losses", "loss dims differ", lambda: jaxtd.loss(_model(dim=5), t), ("dim",))
    add("losses", "loss orders differ", lambda: jaxtd.loss(_model(order=4), t), ("order",))
    add("losses", "loss on arrays", lambda: jaxtd.loss(f, t), ("model", "SymCP"))
    add("losses", "loss target array", lambda: jaxtd.loss(m, f), ("target", "SymCP"))
    add("losses", "inner of tuple", lambda: jaxtd.inner((np.ones(4), f, 3), t), ("SymCP",))
    add("losses", "relative_error zero target",
        lambda: jaxtd.relative_error(m, jaxtd.SymCP(np.zeros(2), np.asarray(t.factors), 3)),
        ("target",))
    add("losses", "relative_error dims differ", lambda: jaxtd.relative_error(_model(dim=5), t),
        ("dim",))
    add("losses", "to_dense of 10^9 entries",
        lambda: jaxtd.to_dense(jaxtd.SymCP(np.ones(2), np.ones((2, 1000)), 3)),
        ("to_dense", "entries", "size", "memory"))
    # -- targets and initialization ----------------------------------------------------------
    for kw, names in [({"dim": 0}, ("dim",)), ({"dim": 2.5}, ("dim",)), ({"rank": 0}, ("rank",)),
                      ({"rank": 9}, ("rank",)), ({"order": 1}, ("order",)),
                      ({"order": "3"}, ("order",)), ({"weights": "decreasing"}, ("weights",)),
                      ({"weights": np.ones(3)}, ("weights",)),
                      ({"weights": np.array([1.0, np.nan])}, ("weights",)),
                      ({"weights": np.zeros(2)}, ("weights",)),
                      ({"dtype": jnp.int32}, ("dtype",)), ({"dtype": "complex64"}, ("dtype",)),
                      ({"key": 0}, ("key",)), ({"key": "seed"}, ("key",)),
                      ({"key": jax.random.split(KEY, 2)}, ("key",))]:
        args = {"key": jax.random.key(1), "dim": 6, "rank": 2, "order": 3, **kw}
        add("targets", f"orthonormal {kw}", lambda a=args: targets.orthonormal(**a), names)
        if "rank" not in kw or kw["rank"] != 9:
            add("targets", f"random_unit {kw}", lambda a=args: targets.random_unit(**a), names)
    for kw, names in [({"width": 0}, ("width",)), ({"width": -1}, ("width",)),
                      ({"width": 2.0}, ("width",)), ({"width": 10 ** 20}, ("width",)),
                      ({"dim": 0}, ("dim",)), ({"delta": 0.0}, ("delta",)),
                      ({"delta": -1e-2}, ("delta",)), ({"delta": math.nan}, ("delta",)),
                      ({"delta": math.inf}, ("delta",)), ({"delta": 1e-30}, ("delta",)),
                      ({"delta": "0.1"}, ("delta",)), ({"scale": "tiny"}, ("scale",)),
                      ({"dtype": jnp.int32}, ("dtype",)), ({"key": 3}, ("key",))]:
        args = {"key": KEY, "width": 4, "dim": 6, **kw}
        add("init", f"init_factors {kw}", lambda a=args: jaxtd.init_factors(**a), names)
    # -- algorithm constructors ----------------------------------------------------------------
    ctor = {"gd": algorithms.gd, "variant": algorithms.variant,
            "deflation": algorithms.deflation, "lazy_gd": algorithms.lazy_gd}
    for name, make in ctor.items():
        first = "delta0" if name == "deflation" else "optimizer"
        for value in (0.0, -0.1, math.nan, math.inf, "0.1"):
            add("algorithms", f"{name}({first}={value!r})", lambda mk=make, v=value: mk(v),
                (first, "learning_rate"))
        add("algorithms", f"{name}(init_scale=-1)", lambda mk=make: mk(init_scale=-1.0),
            ("init_scale",))
        add("algorithms", f"{name}(init_scale=nan)", lambda mk=make: mk(init_scale=math.nan),
            ("init_scale",))
        add("algorithms", f"{name}(bogus=1)", lambda mk=make: mk(bogus=1), ("bogus",))
    add("algorithms", "gd(model='cubic')", lambda: algorithms.gd(model="cubic"), ("model",))
    add("algorithms", "gd(signs='odd')", lambda: algorithms.gd(signs="odd"), ("signs",))
    add("algorithms", "gd(regularization=-1)", lambda: algorithms.gd(regularization=-1.0),
        ("regularization",))
    add("algorithms", "lazy_gd(init='zero')", lambda: algorithms.lazy_gd(init="zero"), ("init",))
    add("algorithms", "deflation(delta1=-1)", lambda: algorithms.deflation(delta1=-1.0),
        ("delta1",))
    add("algorithms", "variant(epochs=0)", lambda: algorithms.variant(epochs=0), ("epochs",))
    # -- run -----------------------------------------------------------------------------------
    for kw, names in [({"width": 0}, ("width",)), ({"width": 3.0}, ("width",)),
                      ({"width": 10 ** 20}, ("width",)), ({"steps": 0}, ("steps",)),
                      ({"steps": -5}, ("steps",)), ({"steps": 11}, ("steps", "record_every")),
                      ({"record_every": 0}, ("record_every",)), ({"key": 0}, ("key",)),
                      ({"key": "a"}, ("key",)), ({"key": jax.random.split(KEY, 3)}, ("key",)),
                      ({"alg": "gd"}, ("algorithm",)), ({"target": np.ones((2, 6))}, ("target",)),
                      ({"active": 9}, ("active",)), ({"active": 0}, ("active",)),
                      ({"divergence_factor": 0.0}, ("divergence_factor",)),
                      ({"divergence_factor": "x"}, ("divergence_factor",)),
                      ({"hparams": {"learning_rate": 0.0}}, ("learning_rate",)),
                      ({"hparams": {"learning_rate": -0.1}}, ("learning_rate",)),
                      ({"hparams": {"learning_rate": math.nan}}, ("learning_rate",)),
                      ({"hparams": {"init_scale": math.inf}}, ("init_scale",)),
                      ({"hparams": {"init_scale": -1.0}}, ("init_scale",)),
                      ({"hparams": {"regularization": -1.0}}, ("regularization",)),
                      ({"hparams": {"momentum": 0.5}}, ("momentum",)),
                      ({"hparams": {"learning_rate": "fast"}}, ("learning_rate",)),
                      ({"target": _target(dim=6, order=2), "width": 40},
                       ()),  # a valid order-2 run
                      ({"init_params": np.ones((3, 6))}, ("init_params",)),
                      ({"init_params": np.full((4, 6), np.nan)}, ("init_params",)),
                      ({"init_params": np.ones((4, 6), np.complex64)}, ("init_params",)),
                      ({"init_params": np.ones((4, 6), np.int32)}, ("init_params",))]:
        expected = names if names else (lambda out: bool(np.isfinite(out.final_relative_error)))
        add("run", f"run {_short(kw)}", lambda k=kw: run(**dict(k)), expected)
    # -- sweep ---------------------------------------------------------------------------------
    sw = lambda **kw: jaxtd.sweep(**{"algorithm": gd, "target": t, "widths": [2, 4],
                                     "seeds": 2, "steps": 10, "record_every": 5,
                                     "progress": False, **kw})
    for kw, names in [({"widths": []}, ("widths",)), ({"widths": [0, 2]}, ("widths",)),
                      ({"widths": [2, 2]}, ("widths",)), ({"widths": [2.5]}, ("widths",)),
                      ({"widths": [10 ** 20]}, ("widths",)), ({"seeds": 0}, ("seeds",)),
                      ({"seeds": -3}, ("seeds",)), ({"seeds": 2.0}, ("seeds",)),
                      ({"steps": 0}, ("steps",)), ({"algorithm": "gd"}, ("algorithm",)),
                      ({"algorithm": [gd]}, ("algorithm",)),
                      ({"target": "t"}, ("target",)), ({"bucketing": "pow3"}, ("bucketing",)),
                      ({"hparams": {"learning_rate": [0.1, -0.1]}}, ("learning_rate",)),
                      ({"hparams": {"learning_rate": []}}, ("learning_rate",)),
                      ({"hparams": {"learning_rate": [0.1, math.nan]}}, ("learning_rate",)),
                      ({"hparams": {"momentum": [0.1]}}, ("momentum", "hparams")),
                      ({"success_threshold": -1.0}, ("success_threshold",)),
                      ({"record_every": 3}, ("record_every",)),
                      ({"chunk_size": 0}, ("chunk_size",))]:
        add("sweep", f"sweep {_short(kw)}", lambda k=kw: sw(**k), names)
    # -- lazy ------------------------------------------------------------------------------------
    for kw, names in [({"method": "qr"}, ("method",)), ({"rcond": -1.0}, ("rcond",)),
                      ({"target": _target(dim=5)}, ("dim",)),
                      ({"model": f}, ("model", "SymCP"))]:
        args = {"model": m, "target": t, **kw}
        add("lazy", f"best_residual {_short(kw)}", lambda a=args: lazy.best_residual(**a), names)
    add("lazy", "best_residual_table widths [0]",
        lambda: lazy.best_residual_table(jax.random.split(KEY, 2), t, [0]), ("widths",))
    add("lazy", "best_residual_table keys int",
        lambda: lazy.best_residual_table(3, t, [2]), ("keys",))
    add("lazy", "lazy_loss delta shape", lambda: lazy.lazy_loss(m, np.ones((3, 6)), t),
        ("delta",))
    add("lazy", "lazy_loss delta nan", lambda: lazy.lazy_loss(m, np.full((4, 6), np.nan), t),
        ("delta",))
    # -- documented conversions: must give the oracle's value --------------------------------
    add("losses", "float64 factors without x64: converted to float32 (oracle)",
        lambda: float(jaxtd.loss(jaxtd.SymCP(np.ones(4), f.astype(np.float64), 3), t)),
        lambda out: math.isclose(out, _dense_loss(m, t), rel_tol=1e-4))
    add("keys", "legacy PRNGKey accepted (same as typed key's data)",
        lambda: float(run(key=jax.random.PRNGKey(0)).final_relative_error),
        lambda out: math.isfinite(out))
    add("keys", "key_for_seed(-1)", lambda: jaxtd.key_for_seed(-1), ("seed",))
    add("keys", "key_for_seed(1.5)", lambda: jaxtd.key_for_seed(1.5), ("seed",))
    _policy_cases(add, t, m, gd, run, sw)
    return cases


def _policy_cases(add, t, m, gd, run, sw):
    """Hangs, silent answers and inconsistencies found by a user study (each was one)."""
    tiny = _target(dim=3, rank=1)
    sim = lambda **kw: jaxtd.simulate(kw.pop("alg", gd), KEY, kw.pop("target", tiny),
                                      **{"width": 2, "steps": 4, "record_every": 2, **kw})
    # hangs: Python loops over user-sized ranges
    add("hangs", "run steps=10**12 (default record_every)",
        lambda: run(steps=10 ** 12, record_every=None), ("steps",))
    add("hangs", "sweep steps=10**12", lambda: sw(steps=10 ** 12, record_every=None), ("steps",))
    add("hangs", "default_record_every(10**12) (oracle: 10**10)",
        lambda: float(jaxtd.default_record_every(10 ** 12)), lambda out: out == 1e10)
    add("hangs", "relative_error of order 10**6",
        lambda: jaxtd.relative_error(jaxtd.SymCP(np.ones(2, np.float32),
                                                 np.full((2, 3), 0.5, np.float32), 10 ** 6),
                                     jaxtd.SymCP(np.ones(1, np.float32),
                                                 np.ones((1, 3), np.float32), 10 ** 6)),
        ("order",))
    add("hangs", "orthonormal(order=10**5)",
        lambda: targets.orthonormal(KEY, 3, 1, 10 ** 5), ("order",))
    add("hangs", "auto buckets of 3000 widths (bucket_widths)",
        lambda: float(len(jaxtd.bucket_widths(list(range(1, 3001)), "auto"))),
        lambda out: out >= 1)
    # one validation for simulate, run and sweep
    for label, thunk, names in [
            ("run active=2.5", lambda: run(active=2.5), ("active",)),
            ("simulate active=2.5", lambda: sim(active=2.5), ("active",)),
            ("run active=True", lambda: run(active=True), ("active",)),
            ("simulate record_every=3 (steps=4)", lambda: sim(record_every=3),
             ("record_every",)),
            ("simulate learning_rate=-0.1",
             lambda: sim(hparams={"learning_rate": -0.1}), ("learning_rate",)),
            ("simulate init_scale=nan", lambda: sim(hparams={"init_scale": math.nan}),
             ("init_scale",)),
            ("simulate width=0", lambda: sim(width=0), ("width",)),
            ("simulate divergence_factor=0", lambda: sim(divergence_factor=0.0),
             ("divergence_factor",))]:
        add("simulate", label, thunk, names)
    for name, make in (("gd", algorithms.gd), ("variant", algorithms.variant),
                       ("lazy_gd", algorithms.lazy_gd)):
        add("algorithms", f'{name}(init_scale="0.05")', lambda mk=make: mk(init_scale="0.05"),
            ("init_scale",))
    add("algorithms", 'deflation(delta0=0.1, delta1="0.01")',
        lambda: algorithms.deflation(0.1, delta1="0.01"), ("delta1",))
    add("losses", 'relative_error(precise="no")',
        lambda: jaxtd.relative_error(m, t, precise="no"), ("precise",))
    add("losses", "residual_sq(precise=0)", lambda: jaxtd.residual_sq(m, t, precise=0),
        ("precise",))

    def jvp_of_loss():
        da = jaxtd.SymCP(jnp.ones_like(m.weights), jnp.ones_like(m.factors), 3)
        got = jax.jvp(lambda a: jaxtd.loss(a, t), (m,), (da,))[1]
        want = jax.jvp(lambda a: jaxtd.losses.loss_autodiff(a, t), (m,), (da,))[1]
        return float(got), float(want)

    add("losses", "jax.jvp of jaxtd.loss (oracle: loss_autodiff)", jvp_of_loss,
        lambda out: math.isclose(out[0], out[1], rel_tol=1e-4))
    tgt = targets.orthonormal(jax.random.key(1), 6, 2, 3)
    noise = 7e-4 * np.asarray(jax.random.normal(jax.random.key(5), (2, 6)))
    for scale in (1e16, 1e19):
        fac = ((np.asarray(tgt.factors, np.float64) + noise) * scale ** (-1 / 3)).astype(
            np.float32)
        est = jaxtd.SymCP(np.full(2, scale, np.float32), fac, 3)
        want = _exact_relative_error(est, tgt)
        add("losses", f"relative_error, weights {scale:g} x factors {scale:g}^(-1/3) "
            f"(oracle {want:.2e})", lambda e=est: float(jaxtd.relative_error(e, tgt)),
            lambda out, w=want: math.isclose(out, w, rel_tol=1e-3))
    lt = targets.orthonormal(jax.random.key(1), 8, 3, 3)
    w0 = jaxtd.init_factors(jax.random.key(2), 16, 8, scale="standard")
    lm = jaxtd.SymCP(jnp.where(jnp.arange(16) % 2 == 0, 1.0, -1.0).astype(jnp.float32), w0, 3)
    add("lazy", "float32 best_residual dense past the threshold (oracle: 0)",
        lambda: float(lazy.best_residual(lm, lt, method="dense")), lambda out: out <= 1e-6)


def _exact_relative_error(est, tgt) -> float:
    """``||E - T|| / ||T||`` of the float inputs in exact rational arithmetic."""
    from fractions import Fraction
    w = [Fraction(float(x)) for x in np.ravel(est.weights)] + \
        [-Fraction(float(x)) for x in np.ravel(tgt.weights)]
    u = [[Fraction(float(x)) for x in row] for row in
         np.concatenate([np.asarray(est.factors, np.float64), np.asarray(tgt.factors, np.float64)])]
    k, r = len(w), len(np.ravel(tgt.weights))
    total = tail = Fraction(0)
    for i in range(k):
        for j in range(k):
            term = w[i] * w[j] * sum(a * b for a, b in zip(u[i], u[j])) ** est.order
            total += term
            tail += term if i >= k - r and j >= k - r else 0
    return math.sqrt(max(float(total), 0.0) / float(tail))


def _short(kw) -> str:
    parts = []
    for k, v in kw.items():
        if isinstance(v, (jax.Array, np.ndarray)):
            v = f"array{tuple(v.shape)}"
        elif isinstance(v, list) and v and isinstance(v[0], algorithms.Algorithm):
            v = f"[{len(v)} algorithms]"
        elif isinstance(v, jaxtd.SymCP):
            v = f"SymCP(d={v.dim}, l={v.order})"
        parts.append(f"{k}={v!r}" if not isinstance(v, str) or k == "key" else f"{k}={v}")
    text = ", ".join(parts)
    return text if len(text) < 70 else text[:67] + "..."


class _Hang(BaseException):
    """Raised by SIGALRM when an API case runs past the time box."""


API_TIMEOUT = 30


def _alarm(signum, frame):
    raise _Hang


def classify(thunk, expected) -> tuple[str, str]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(API_TIMEOUT)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            out = thunk()
            out = jax.block_until_ready(out) if not isinstance(out, (float, tuple)) else out
        signal.alarm(0)
    except _Hang:
        return "hang", f"still running after {API_TIMEOUT} s"
    except (ValueError, TypeError) as err:
        msg = str(err)
        if callable(expected):
            return "traceback", f"{type(err).__name__}: {msg.splitlines()[0][:90]}"
        if "\n" in msg.strip() or not any(n in msg for n in expected):
            return "vague", f"{type(err).__name__}: {msg.splitlines()[0][:90]}"
        return "clear", msg.splitlines()[0][:90]
    except Exception as err:  # noqa: BLE001 - the audit's point is to see what escapes
        return "traceback", f"{type(err).__name__}: {str(err).splitlines()[0][:90] if str(err) else ''}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if callable(expected):
        return ("correct", "") if expected(out) else ("silent", f"wrong value {out!r}"[:90])
    return "silent", "returned without an error"


# -- the CLI -------------------------------------------------------------------------------------

TINY = """name = "audit"
[target]
order = 3
dim = 6
rank = 2
[sweep]
algorithms = ["gd"]
widths = [2, 4]
seeds = 4
steps = 40
record_every = 20
chunk_size = 1
success_threshold = 1e-2
"""


def cli_cases(tmp: Path):
    def cfg_case(label, old, new, key):
        path = tmp / f"c{len(cases)}.toml"
        path.write_text(TINY.replace(old, new) if old else new)
        cases.append(("cli config", label, ["run", str(path), "--out", str(tmp / f"o{len(cases)}")], key))

    cases = []
    for key, bad in [("order", "1"), ("order", '"3"'), ("dim", "0"), ("dim", "-4"), ("rank", "0"),
                     ("rank", "99"), ("seeds", "0"), ("seeds", "-1"), ("steps", "0"),
                     ("steps", "-40"), ("widths", "[]"), ("widths", "[0, 2]"),
                     ("widths", "[10000000]"), ("widths", "[100000000000000000000]"),
                     ("record_every", "7"), ("chunk_size", "0"), ("seeds", "10000000"),
                     ("steps", "1000000000")]:
        # the last two are valid but huge: the run must start with its estimate
        line = next(l for l in TINY.splitlines() if l.startswith(f"{key} ="))
        cfg_case(f"{key} = {bad}", line, f"{key} = {bad}", key)
    cfg_case('name = ""', 'name = "audit"', 'name = ""', "name")
    cfg_case("unknown section", "[sweep]", "[swep]\nx = 1\n[sweep]", "swep")
    cfg_case("unknown gd key", "", TINY + "[gd]\nlr = 1\n", "lr")
    cfg_case("gd learning_rate = -0.1", "", TINY + "[gd]\nlearning_rate = -0.1\n",
             "learning_rate")
    cfg_case("gd init_scale = 0", "", TINY + "[gd]\ninit_scale = 0\n", "init_scale")
    cfg_case("gd optimizer = adamm", "", TINY + '[gd]\noptimizer = "adamm"\n', "optimizer")
    cfg_case("lazy width 3000 at d = 40", "", TINY.replace("dim = 6", "dim = 40").replace(
        '["gd"]', '["lazy"]').replace("[2, 4]", "[3000]"), "memory")
    cfg_case("TOML syntax error", "", "[target\norder = 3\n", "invalid TOML")
    cases.append(("cli files", "--config missing file", ["run", str(tmp / "none.toml"), "--out", str(tmp / "x")], "none.toml"))
    cases.append(("cli files", "--resume with nothing saved",
                  ["run", "--resume", "--out", str(tmp / "empty")], "resume"))
    cases.append(("cli files", "show on a missing folder", ["show", str(tmp / "nowhere")],
                  "nowhere"))
    cases.append(("cli files", "unknown preset", ["run", "--preset", "nope", "--out",
                                                 str(tmp / "y")], "nope"))
    _cli_policy_cases(tmp, cases, cfg_case)
    return cases


def _expect_exit(status: int, key: str | None = None):
    """A checker of ``(rc, stderr)``: exit ``status`` (and ``key`` in the last line)."""
    def check(rc, err):
        last = err.splitlines()[-1] if err else ""
        if rc is None:
            return "hang", "still running after 60 s"
        if rc == status and (key is None or key in last) and "UNSET" not in err:
            return ("clear" if status else "correct"), (last[:100] or f"exit {rc}")
        if rc == 1:
            return "traceback", f"exit 1: {last[:90]}"
        return ("silent" if rc == 0 else "vague"), f"exit {rc}: {last[:90]}"
    return check


def _cli_policy_cases(tmp: Path, cases, cfg_case):
    """The exit-status policy: user errors exit 2 with one line, never 1; no hangs."""
    def add(label, argv, check, area="cli policy"):
        cases.append((area, label, argv, check))

    factory = tmp / "userfactories"
    factory.mkdir(exist_ok=True)
    (factory / "uf_import.py").write_text("raise RuntimeError('boom at import')\n")
    (factory / "uf_step.py").write_text(
        "import jaxtd\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
        "    return a._replace(step=lambda s, t: (s, 3.0))\n")
    (factory / "uf_init.py").write_text(
        "import jaxtd\ndef build():\n    a = jaxtd.algorithms.gd(0.1)\n"
        "    return a._replace(init=lambda *a, **k: 'state')\n")
    for module in ("uf_import", "uf_step", "uf_init"):
        path = tmp / f"{module}.toml"
        path.write_text(TINY.replace('["gd"]', '["mine"]')
                        + f'[mine]\nfactory = "{module}:build"\n')
        add(f"user factory {module}", ["run", str(path), "--out", str(tmp / f"o-{module}")],
            _expect_exit(2, "[mine] factory"))
    for args in ('{ b1 = "x" }', "{ b1 = [1, 2] }"):
        path = tmp / f"opt{len(cases)}.toml"
        path.write_text(TINY + f'[gd]\noptimizer = "adam"\noptimizer_args = {args}\n')
        add(f"optimizer_args = {args}", ["run", str(path), "--out", str(tmp / f"o{len(cases)}")],
            _expect_exit(2, "optimizer_args"))
    for label, old, new, check in [
            ("steps = 10**12 --dry-run", "steps = 40", "steps = 1000000000000",
             _expect_exit(2, "steps")),
            ("seeds = 10**12 --dry-run (plan only)", "seeds = 4", "seeds = 1000000000000",
             _expect_exit(0)),
            ("order = 100 --dry-run", "order = 3", "order = 100", _expect_exit(2, "order")),
            ("widths = {below = 2, above = 10**12} --dry-run", "widths = [2, 4]",
             "widths = { below = 2, above = 1000000000000 }", _expect_exit(2, "above")),
            ("3000 widths --dry-run (plan only)", "widths = [2, 4]",
             "widths = [" + ", ".join(map(str, range(1, 3001))) + "]", _expect_exit(0)),
            ("missing seeds: a real example, not UNSET", "seeds = 4\n", "",
             _expect_exit(2, "seeds"))]:
        path = tmp / f"p{len(cases)}.toml"
        text = TINY.replace(old, new)
        if "above" in new:
            text = text.replace('["gd"]', '["lazy"]')
        path.write_text(text)
        add(label, ["run", str(path), "--dry-run", "--no-compile-cache"], check)
    bad = tmp / "debug.toml"
    bad.write_text(TINY.replace("order = 3", "order = 1"))
    add("--debug on a config error: exit 2, not 1", ["--debug", "run", str(bad), "--dry-run"],
        _expect_exit(2, "order"))

    def broken_pipe():
        proc = subprocess.Popen([sys.executable, "-m", "jaxtd", "presets"], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None, ""
        text = err.decode().strip()
        return (proc.returncode if not text else 2), text

    add("`jaxtd presets | head`: reader gone", broken_pipe, _expect_exit(0))
    # ENOSPC is hard to provoke portably; the line it prints is checked by tests/test_cli.py


def _lock_and_sweep_json_cases(tmp: Path, good: Path, cases):
    """A run whose chunk folder is locked by another process, or whose sweep.json was damaged
    before the chunk finished: both are the user's situation (exit 2), not a bug."""
    def unfinished(name):
        out = tmp / name
        shutil.copytree(good, out)
        chunk = sorted((out / "sweeps").rglob("sweep.json"))[0].parent
        for f in ("results.json", "config.json", "rows.npz", "histories.npz", "results.csv"):
            with contextlib.suppress(FileNotFoundError):
                (chunk / f).unlink()
        with contextlib.suppress(FileNotFoundError):
            (out / "results.csv").unlink()
        return out, chunk

    out, chunk = unfinished("damaged-sweep-json")
    (chunk / "sweep.json").write_text("{not json")
    cases.append(("cli policy", "damaged sweep.json of an unfinished chunk: --resume",
                  ["run", "--resume", "--out", str(out)], _expect_exit(2, "sweep.json")))
    out, chunk = unfinished("locked")

    def locked():
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\nfrom jaxtd.results import _acquire\n"
             "_acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(chunk)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
            text=True)
        try:
            holder.stdout.readline()
            return run_cli(["run", "--resume", "--out", str(out)], timeout=60)
        finally:
            holder.kill()
            holder.wait()

    cases.append(("cli policy", "chunk folder locked by another process: --resume", locked,
                  _expect_exit(2, "being written by")))


def run_cli(argv, timeout=300) -> tuple[int, str]:
    """Exit status and stderr; a run still going after ``timeout`` is killed (status None)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "jaxtd", *argv], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        text = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        return None, text.strip()
    return proc.returncode, proc.stderr.strip()


def classify_cli(argv, key) -> tuple[str, str]:
    if callable(key):  # a policy case: its own checker of (exit status, stderr)
        return key(*(argv() if callable(argv) else run_cli(argv, timeout=60)))
    rc, err = run_cli(argv, timeout=60)
    if rc is None:  # a huge but valid run: it must say up front how long it will take
        note = [line for line in err.splitlines() if "estimated" in line]
        return (("clear", "starts with: " + note[0][:90]) if note
                else ("silent", "ran 60 s with no estimate"))
    last = err.splitlines()[-1] if err else ""
    if rc == 2 and key in last and last.startswith("jaxtd: error"):
        return "clear", last[:100]
    if rc == 2 or (rc not in (0, 1) and "Traceback" not in err):
        return "vague", f"exit {rc}: {last[:90]}"
    if rc == 0:
        return "silent", "exit 0"
    return "traceback", f"exit {rc}: {last[:90]}"


def damaged_results(tmp: Path, policy_only: bool = False):
    """A saved run whose files are then truncated, emptied, flipped or swapped in
    (``policy_only``: only the locked folder and the damaged sweep.json)."""
    good = tmp / "good"
    path = tmp / "c.toml"
    path.write_text(TINY)
    rc, err = run_cli(["run", str(path), "--out", str(good)])
    assert rc == 0, err
    chunks = sorted((good / "sweeps").rglob("*.npz")) if (good / "sweeps").exists() else \
        sorted(good.rglob("*.npz"))
    cases = []

    def variant(label, damage):
        out = tmp / f"d{len(cases)}"
        shutil.copytree(good, out)
        damage(out)
        cases.append(("saved files", f"{label}: show", ["show", str(out)]
                      if False else ["show", str(out)], ""))
        cases.append(("saved files", f"{label}: --resume", ["run", "--resume", "--out", str(out),
                                                           "--no-plots"], ""))

    rel = lambda p: p.relative_to(good)

    def truncate(p):
        return lambda out: (out / rel(p)).write_bytes((out / rel(p)).read_bytes()[:40])

    def flip(p):
        def f(out):
            data = bytearray((out / rel(p)).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (out / rel(p)).write_bytes(bytes(data))
        return f

    _lock_and_sweep_json_cases(tmp, good, cases)
    if policy_only:
        return cases
    if chunks:
        variant("truncated chunk", truncate(chunks[0]))
        variant("empty chunk", lambda out: (out / rel(chunks[0])).write_bytes(b""))
        variant("bit-flipped chunk", flip(chunks[0]))
        if len(chunks) > 1:
            variant("chunk swapped in from another chunk", lambda out: shutil.copy(
                out / rel(chunks[1]), out / rel(chunks[0])))
    for name in ("config.toml", "config.json", "results.csv", "rows.npz", "histories.npz"):
        if (good / name).exists():
            variant(f"truncated {name}", truncate(good / name))
    for name in ("rows.npz", "histories.npz"):
        if (good / name).exists():
            variant(f"bit-flipped {name}", flip(good / name))
    return cases


def classify_saved(argv, label) -> tuple[str, str]:
    """``show`` reads the checksummed ``rows.npz``/``histories.npz`` only: damage to a chunk or
    to the ``results.csv`` export cannot change what it prints (``correct`` when it exits 0);
    damage to what it reads must be a clear error. ``--resume`` must recompute or refuse."""
    rc, err = run_cli(argv)
    last = err.splitlines()[-1] if err else ""
    if argv[0] == "show" and rc == 0 and ("chunk" in label or "results.csv" in label):
        return "correct", "table from the verified final files"
    if "Traceback" in err or rc == 1:
        return "traceback", f"exit {rc}: {last[:90]}"
    if rc == 2 and last.startswith("jaxtd: error"):
        return "clear", last[:100]
    if rc == 0 and argv[0] == "run":
        return "correct", "recomputed: " + (err.splitlines()[0][:80] if err else "")
    return ("silent" if rc == 0 else "vague"), f"exit {rc}: {last[:90]}"


# -- crash trials --------------------------------------------------------------------------------

def crash_trials(tmp: Path, n_kill: int, n_int: int):
    path = tmp / "crash.toml"
    path.write_text(TINY.replace("seeds = 4", "seeds = 16").replace("steps = 40", "steps = 4000")
                    .replace("record_every = 20", "record_every = 100"))
    ref = tmp / "ref"
    t0 = time.perf_counter()
    rc, err = run_cli(["run", str(path), "--out", str(ref)])
    ref_seconds = time.perf_counter() - t0
    assert rc == 0, err
    want = (ref / "results.csv").read_text()
    rng = random.Random(0)
    rows = []
    for kind, n in (("SIGKILL", n_kill), ("SIGINT", n_int)):
        for i in range(n):
            out = tmp / f"{kind}{i}"
            delay = rng.uniform(0.5, 0.9 * ref_seconds)
            proc = subprocess.Popen([sys.executable, "-m", "jaxtd", "run", str(path),
                                     "--out", str(out)], cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            rc = proc.returncode
            if not out.exists() or not (out / "config.toml").exists():
                again = run_cli(["run", str(path), "--out", str(out)])
            else:
                again = run_cli(["run", "--resume", "--out", str(out)])
            same = (out / "results.csv").exists() and (out / "results.csv").read_text() == want
            ok_rc = rc in (-9, 0) if kind == "SIGKILL" else rc in (130, 0)
            rows.append((kind, f"{delay:4.1f} s", rc, again[0], "identical" if same else "DIFFERS",
                         "ok" if ok_rc and same and again[0] == 0 else "FAIL"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-crash", action="store_true", help="skip the crash trials")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--interrupts", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print every case")
    parser.add_argument("--quick", action="store_true",
                        help="input and exit-policy cases only (no damaged-file variants, no "
                        "crash trials)")
    parser.add_argument("--api-timeout", type=int, default=API_TIMEOUT,
                        help="seconds before an API case counts as a hang")
    parser.add_argument("--save", metavar="FILE", help="also write the report into FILE")
    args = parser.parse_args(argv)
    globals()["API_TIMEOUT"] = args.api_timeout
    if args.save:
        return _tee(args.save, lambda: main([a for a in (argv or sys.argv[1:])
                                             if a != "--save" and a != args.save]))
    print(f"jaxtd {jaxtd.__version__}, jax {jax.__version__}, backend {jax.default_backend()}")
    results = []
    for area, label, thunk, expected in api_cases():
        results.append((area, label, *classify(thunk, expected)))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for area, label, argv_, key in cli_cases(tmp):
            results.append((area, label, *classify_cli(argv_, key)))
        for area, label, argv_, key in damaged_results(tmp, policy_only=args.quick):
            results.append((area, label, *(classify_cli(argv_, key) if callable(key)
                                           else classify_saved(argv_, label))))
        crashes = ([] if args.no_crash or args.quick
                   else crash_trials(tmp, args.kills, args.interrupts))
    table = collections.OrderedDict()
    for area, _, outcome, _ in results:
        table.setdefault(area, collections.Counter())[outcome] += 1
    kinds = ("clear", "correct", "vague", "traceback", "silent", "hang")
    print(f"\n| area | tried | {' | '.join(kinds)} |\n|---|---|" + "---|" * len(kinds))
    total = collections.Counter()
    for area, counts in table.items():
        total.update(counts)
        print(f"| {area} | {sum(counts.values())} | "
              + " | ".join(str(counts[k]) for k in kinds) + " |")
    print(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in kinds) + " |")
    exit1 = sum(1 for area, _, outcome, detail in results
                if outcome == "traceback" and detail.startswith("exit 1"))
    print(f"\nuser errors that exit 1 (internal error): {exit1}; hangs: {total['hang']}; "
          f"silent results: {total['silent']}")
    bad = [r for r in results if r[2] in ("vague", "traceback", "silent", "hang")]
    print(f"\n{len(bad)} cases not clear:" if bad else "\nevery case clear or correct")
    for area, label, outcome, detail in (results if args.verbose else bad):
        print(f"  [{outcome}] {area}: {label} -> {detail}")
    if crashes:
        print("\n| signal | after | exit | resume exit | results.csv vs uninterrupted | verdict |")
        print("|---|---|---|---|---|---|")
        for row in crashes:
            print("| " + " | ".join(str(x) for x in row) + " |")
    return 0


def _tee(path: str, fn) -> int:
    """Run ``fn`` printing to stdout and into ``path``."""
    class Tee(io.TextIOBase):
        def __init__(self, *streams):
            self.streams = streams

        def write(self, text):
            for s in self.streams:
                s.write(text)
            return len(text)

        def flush(self):
            for s in self.streams:
                s.flush()

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f, contextlib.redirect_stdout(Tee(sys.stdout, f)):
        return fn()


if __name__ == "__main__":
    sys.exit(main())
