"""Outward integrations: autopeft's optimisers inside other tuning frameworks.

* :mod:`autopeft.integrations.optuna` — :class:`~autopeft.integrations.optuna.MoboSampler`,
  ``mobo`` as an Optuna sampler (Optuna is a core dependency).
* :mod:`autopeft.integrations.tune` — ``MoboSearcher`` (a Ray Tune searcher) and the
  ``MOASHAScheduler`` / ``MOPBTScheduler`` / ``PBTScheduler`` Tune schedulers (needs the ``ray`` extra:
  ``pip install 'autopeft[ray]'``).

Importing this package imports neither Optuna nor Ray; import the submodule you need.
See ``docs/integrations.md``.
"""
