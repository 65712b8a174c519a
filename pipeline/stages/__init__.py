"""The pipeline's stages: each turns one artifact into the next (spec §4).

A stage is a pure function of its inputs, so running it twice yields the same bytes and the
orchestrator can cache, resume and retry it without special cases. Stages read only the models
in :mod:`pipeline.models` and raise only :mod:`pipeline.errors`.
"""
