"""Where a run trains: one device, several devices of one machine, or several machines.

A recipe trains the same way on any of them (:func:`cxr_utils.train.train_recipe` takes ``strategy=``):

- ``None``: one device, the first GPU if TensorFlow sees one, else the CPU (Colab's GPU needs nothing more);
- ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over every GPU of this machine (or the CPU when there
  is none): each device gets an equal slice of each batch and the gradients are summed across devices;
- ``"multiworker"``: ``tf.distribute.MultiWorkerMirroredStrategy`` over several machines (or processes),
  each described by the ``TF_CONFIG`` environment variable; run the same command on every machine;
- or any ``tf.distribute.Strategy`` built by hand.

The batch size of a recipe is the **global** batch: with ``N`` replicas each one computes
``batch_size / N`` images of every batch, and the summed gradient is the one a single device would
compute for the whole batch, so the recipe's learning rate needs no change. What differs is only the
order of floating-point additions, and what depends on a replica's own batch (batch normalisation's
statistics, dropout's masks). Only the chief (the worker with index 0) writes the run folder; the
other workers write theirs to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import json
import os
from typing import Any


class StrategyError(ValueError):
    """A strategy that cannot be used as asked; the message says why and what to do."""


def strategy_for(strategy: Any = None):
    """Return the ``tf.distribute.Strategy`` for ``None``, ``"mirrored"``, ``"multiworker"`` or a strategy itself.

    Raises:
        StrategyError: an unknown name, or ``"multiworker"`` without ``TF_CONFIG``.
    """
    import tensorflow as tf

    if strategy is None or strategy == "default":
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise StrategyError("strategy='multiworker' needs TF_CONFIG on every machine: the cluster's addresses "
                                "and this machine's task (README, 'Training on several machines')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"strategy must be None, 'mirrored', 'multiworker' or a tf.distribute.Strategy, "
                        f"got {strategy!r}")


def describe(strategy) -> dict[str, Any]:
    """What a run records of its strategy: its name, the replicas in sync and the workers."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy():
        name = "default"
    elif isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    else:
        name = type(strategy).__name__
    workers = 1
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and name != "default":
        spec = resolver.cluster_spec().as_dict()
        workers = max(1, sum(len(v) for k, v in spec.items() if k in ("chief", "worker")))
    return {"name": name, "replicas": int(strategy.num_replicas_in_sync), "workers": workers}


def is_chief(strategy) -> bool:
    """True on the one worker that writes the run folder: the ``chief``, else worker 0 (always True on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief
