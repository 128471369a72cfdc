"""Scoring a trained run against PCA and fpack: metrics, baselines, report, plots, runner.

Modules are imported on demand: ``fitsae evaluate --plot-only`` needs only :mod:`.report` and
:mod:`.plots` and must not load TensorFlow.
"""
