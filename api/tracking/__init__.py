"""Experiment tracking of studies (``spec.tracking``): MLflow runs and TensorBoard event files.

``rules`` (what a user may name: stores and folders, checked at creation), ``hub`` (the tracking
thread and a study's tracker, fed by the scheduler), ``mlflow_sink`` and ``tensorboard_sink``.
Nothing here imports mlflow or tensorboardX until a study tracks something; both come with the
``tracking`` extra. See docs/tracking.md.
"""
