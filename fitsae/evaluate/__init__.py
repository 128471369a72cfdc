"""Scoring a trained run against PCA and fpack.

Options and η (:mod:`.options`), the scored region (:mod:`.geometry`), PCA and the classical codecs
(:mod:`.comparisons`), the scoring pass (:mod:`.scoring`) into exact sums (:mod:`.metrics`), the
report (:mod:`.assembly`, :mod:`.report`, :mod:`.plots`), and the run/watch drivers (:mod:`.runner`).

Modules are imported on demand: ``fitsae evaluate --plot-only`` needs only :mod:`.report` and
:mod:`.plots` and must not load TensorFlow.
"""
