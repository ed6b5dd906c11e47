"""The seed axis sharded over 4 virtual CPU devices gives the single-device results.

The device count is fixed when JAX initializes, so the check runs in a fresh Python process that
sets ``jax_num_cpu_devices`` first; it saves both results and this test compares the files.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd

from jaxtd.results import Results

from tests.children import without_device_count

SCRIPT = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_num_cpu_devices", 4)  # before JAX initializes its backends
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    import jaxtd
    from jaxtd import algorithms
    from jaxtd import sweep

    assert len(jax.devices()) == 4, jax.devices()
    target = jaxtd.targets.orthonormal(jax.random.PRNGKey(7), 6, 2, 3)
    algorithm = algorithms.gd(0.2, init_scale=0.3)
    # 6 seeds: the chunk is padded to 8 = 2 per device; two hparam values; widths 3 and 4
    kwargs = dict(seeds=6, widths=[3, 4], steps=240, record_every=40,
                  hparams={"learning_rate": [0.1, 0.2]})
    sharded = sweep(algorithm, target, **kwargs)
    single = sweep(algorithm, target, devices=jax.devices()[:1], **kwargs)
    sharded.save(sys.argv[1] + "/sharded")
    single.save(sys.argv[1] + "/single")
""")


def test_sharded_equals_single_device(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = without_device_count(env.get("XLA_FLAGS", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sharded = Results.load(tmp_path / "sharded")
    single = Results.load(tmp_path / "single")
    assert sharded.info["n_devices"] == 4 and sharded.info["seed_shards"] == 4
    assert sharded.info["chunk_len"] == 8
    assert single.info["n_devices"] == 1 and single.info["seed_shards"] == 1
    assert len(sharded) == 6 * 2 * 2
    assert sharded.rows["seed"].tolist() == [s for s in range(6) for _ in range(4)]
    pd.testing.assert_frame_equal(sharded.rows, single.rows, check_exact=False, rtol=1e-12,
                                  atol=1e-14)
    assert sorted(sharded.histories) == sorted(single.histories)
    for k, v in single.histories.items():
        np.testing.assert_allclose(sharded.histories[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    # not a vacuous comparison: the runs moved and differ across seeds
    err = sharded.rows["final_relative_error"].to_numpy()
    assert np.ptp(err) > 1e-3
