"""Export a trained run as a self-contained artifact that serves with torch alone.

`rankitect.export.artifact.export_run` writes the folder; `rankitect.export.serving` is the
loader copied into it. This package's `__init__` imports nothing, so that
`rankitect.data.hashing` can take the hashing rule from `serving` without importing torch.
"""
