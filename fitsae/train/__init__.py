"""Training: the generic two-optimizer loop, checkpoints, summaries, signals and export.

``fitsae.train.loop.train`` runs a config; ``fitsae.train.checkpoints.load_model`` gets a trained
model back. Submodules are imported directly (this package imports nothing heavy).
"""
