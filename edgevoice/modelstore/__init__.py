"""The model store: a catalog of downloadable models and the per-user (or system-wide) models
dir they are installed into, with resumable, verified, all-or-nothing downloads.

Modules: ``catalog`` (load + validate), ``store`` (installed models, manifests, pins, verify,
rm), ``download`` (HTTP Range resume), ``archive`` (safe unzip), ``install`` (`pull`),
``licenses`` (accept once), ``resolve`` (config value -> path, for `run`), ``cli``.
Nothing here runs at import time and nothing downloads unless `pull` is called.
"""
