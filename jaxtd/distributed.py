"""Several processes, one sweep: JAX's multi-controller runtime.

Every process runs the same Python program. :func:`initialize` (first thing, before any other JAX
call) connects them; afterwards ``jax.devices()`` lists the devices of every process and
:func:`jaxtd.sweep` shards its seed axis over all of them: each process computes its share of the
seeds, the results are gathered so every process returns the same
:class:`~jaxtd.results.Results`, and only process 0 (:func:`is_main_process`) writes files.

The helpers below (:func:`global_array`, :func:`gather`, :func:`broadcast_bytes`,
:func:`broadcast_json`, :func:`agree`) are what the sweep uses to move host values in and out of
arrays that span processes; each is a collective: every process must call it, in the same order.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["initialize", "is_main_process", "process_index", "process_count", "spans_processes",
           "global_array", "gather", "broadcast_bytes", "broadcast_json", "agree"]

CPU_COLLECTIVES = ("gloo", "mpi", None)


def _parse_address(address) -> str:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) → the same string, validated."""
    if not isinstance(address, str):
        raise TypeError(f"coordinator_address must be a 'HOST:PORT' string, got "
                        f"{type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or host in ("[]",):
        raise ValueError(f"coordinator_address={address!r} is not HOST:PORT; e.g. "
                         "'10.0.0.1:12345' (the host of process 0 and a free port)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"coordinator_address={address!r} has port {port!r}; give a port number "
                         "in 1..65535, e.g. '10.0.0.1:12345'")
    return address


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, auto: bool = False,
               cpu_collectives: Optional[str] = "gloo", initialization_timeout: int = 300) -> int:
    """Connect this process to the others (``jax.distributed.initialize``); returns its index.

    Call it first, before any other JAX call, with the same ``coordinator_address`` and
    ``num_processes`` in every process and ``process_id`` in ``0 .. num_processes - 1``
    (process 0 hosts the coordinator at ``coordinator_address``). ``auto=True`` instead lets JAX
    read everything from the cluster environment (SLURM, Open MPI, TPU pod slices) and takes no
    other argument.

    ``cpu_collectives`` selects how CPU devices of different processes exchange data (``"gloo"``,
    the default, ships with jaxlib; ``"mpi"`` needs an MPI library; ``None`` keeps JAX's
    setting); it does not matter on GPU or TPU. ``initialization_timeout`` (seconds) bounds the
    wait for the other processes.

    Raises ``ValueError``/``TypeError`` for a malformed address or an out-of-range process id,
    and ``RuntimeError`` when called twice or after JAX has already run a computation.
    """
    if not isinstance(auto, bool):
        raise TypeError(f"auto must be True or False, got {auto!r}")
    if cpu_collectives not in CPU_COLLECTIVES:
        raise ValueError(f"cpu_collectives must be one of {CPU_COLLECTIVES}, got "
                         f"{cpu_collectives!r}")
    _check_count("initialization_timeout", initialization_timeout, 1)
    given = {k: v for k, v in (("coordinator_address", coordinator_address),
                               ("num_processes", num_processes), ("process_id", process_id))
             if v is not None}
    if auto:
        if given:
            raise ValueError(f"auto=True reads the cluster environment; drop {sorted(given)} "
                             "(or pass all three without auto)")
        kwargs: dict[str, Any] = {}
    else:
        missing = [k for k in ("coordinator_address", "num_processes", "process_id")
                   if k not in given]
        if missing:
            raise ValueError(f"missing {missing}: pass coordinator_address='HOST:PORT', "
                             "num_processes=N and process_id=I (0..N-1), or auto=True on a "
                             "cluster JAX detects (SLURM, Open MPI, TPU pod)")
        n = _check_count("num_processes", num_processes, 1)
        i = _check_count("process_id", process_id, 0)
        if i >= n:
            raise ValueError(f"process_id={i} is out of range for num_processes={n}; use "
                             f"0..{n - 1}")
        kwargs = {"coordinator_address": _parse_address(coordinator_address),
                  "num_processes": n, "process_id": i}
    if jax.distributed.is_initialized():
        raise RuntimeError("jaxtd.distributed.initialize was already called in this process "
                           f"(process {jax.process_index()} of {jax.process_count()}); call it "
                           "once")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(initialization_timeout=initialization_timeout, **kwargs)
    except RuntimeError as err:
        if "before any JAX" in str(err) or "backend" in str(err).lower():
            raise RuntimeError("jaxtd.distributed.initialize must come before any other JAX "
                               "call (JAX already started in this process: a computation, "
                               "jax.devices(), ...); call it first") from err
        raise
    except ValueError as err:
        if auto:
            raise ValueError("auto=True found no cluster environment JAX can read (SLURM, Open "
                             "MPI, TPU pod); pass coordinator_address, num_processes and "
                             f"process_id instead ({err})") from err
        raise
    return jax.process_index()


def process_index() -> int:
    """This process's index, ``0 .. process_count() - 1`` (0 without :func:`initialize`)."""
    return jax.process_index()


def process_count() -> int:
    """The number of connected processes (1 without :func:`initialize`)."""
    return jax.process_count()


def is_main_process() -> bool:
    """True in process 0, the one that writes files (always true in a single process)."""
    return jax.process_index() == 0


def spans_processes(devices) -> bool:
    """Whether ``devices`` belong to more than one process (the multi-process code path).

    Raises ``ValueError`` for devices that leave out some process, or that belong to other
    processes only: every collective involves every process.
    """
    owners = {d.process_index for d in devices}
    if len(owners) == 1:
        if owners != {jax.process_index()}:
            raise ValueError(f"devices belong to process {owners.pop()} only; pass devices of "
                             "this process (jax.local_devices()) or of every process "
                             "(jax.devices())")
        return False
    if owners != set(range(jax.process_count())):
        raise ValueError(f"devices span processes {sorted(owners)} of {jax.process_count()}; "
                         "pass devices of every process (jax.devices()) or of this one only")
    return True


def _host_value(leaf) -> np.ndarray:
    return np.asarray(jax.device_get(leaf))


def global_array(tree, sharding):
    """Host values (numpy, scalars or single-process JAX arrays; the same in every process) →
    arrays laid out by ``sharding``, which may span processes.

    Each process supplies only its own devices' slices (``jax.make_array_from_callback``);
    typed PRNG keys travel as their key data.
    """
    def put(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                  jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = _host_value(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def gather(tree):
    """Arrays that span processes → the full numpy arrays, in every process."""
    return jax.tree_util.tree_map(np.asarray,
                                  multihost_utils.process_allgather(tree, tiled=True))


def broadcast_bytes(payload: Optional[bytes]) -> bytes:
    """Process 0's ``payload`` → every process (the others pass ``None``)."""
    main = is_main_process()
    if main and not isinstance(payload, bytes):
        raise TypeError("process 0 must pass bytes to broadcast_bytes")
    # int32 lengths and uint8 data: both exist without x64
    size = int(np.asarray(multihost_utils.broadcast_one_to_all(
        np.asarray([len(payload) if main else 0], np.int32)))[0])
    if size == 0:
        return b""
    data = np.frombuffer(payload, np.uint8) if main else np.zeros(size, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(data), np.uint8).tobytes()


def broadcast_json(value: Any = None) -> Any:
    """Process 0's JSON-able ``value`` → every process (the others' ``value`` is ignored): how a
    decision only process 0 can take (what its files hold) reaches the others. Without several
    processes it returns ``value`` unchanged."""
    if jax.process_count() == 1:
        return value
    payload = json.dumps(value).encode() if is_main_process() else None
    return json.loads(broadcast_bytes(payload))


def agree(text: str, what: str) -> None:
    """Check that every process passes the same ``text`` (e.g. a configuration fingerprint);
    raises the same ``ValueError`` in every process otherwise, naming the processes that differ."""
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))  # (processes, 32)
    differ = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
    if differ:
        raise ValueError(f"processes {differ} were given a different {what} than process 0; "
                         "run the same command (same arguments) in every process")
