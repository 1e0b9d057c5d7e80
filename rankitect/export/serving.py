"""Serve a ranking model exported by `rankitect export`: torch (+ fbgemm_gpu) and nothing else.

This one file is copied into every export artifact as `rankitect_serving.py`; it never imports
Rankitect. From the artifact folder (or with it on `sys.path`):

    import rankitect_serving
    model = rankitect_serving.load("DIR")            # int8=True for the quantized program
    model.score_rows([{"I1": "3", "C1": "68fd1e64", ...}])   # click probabilities
    model.predict(dense, kjt)                         # inputs already preprocessed

or from a shell: `python DIR/rankitect_serving.py DIR ROWS.jsonl` prints one probability a row.

A raw row is a dict of column name -> raw value, the columns the importer read (extra columns
such as the label are ignored). `preprocessing.json` says, per model input, how a raw value
became what the model saw at training time:

- dense: a number or its text ("" / None / "nan": missing) -> `fill` if missing, then
  `max(v, clamp_min)` when set, then `transform` ("none" or "log1p").
- sparse, hashing "fnv1a64": the text of the value as written (integers and whole floats by
  their decimal form, booleans as "true" / "false") -> `id_of_text` below; missing -> 0.
  `slice` takes text[a:b] of the stripped value first (after checking `pattern`).
- sparse, hashing "identity": the raw value (or its decimal text) is the id, in [0, hash_size).
- multi (lists): a list, or text split on `list_sep`; hashed elements that are missing are
  dropped.

`fnv1a64_text` / `id_of_text` are the reference of the hashing rule; the importers' vectorized
form (rankitect.data.hashing) is tested against them. Only the standard library is imported
with this module; `load` imports torch (and fbgemm_gpu, whose operators the programs call).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST_FILE = "manifest.json"
PREPROCESSING_FILE = "preprocessing.json"
SAMPLES_FILE = "samples.pt"
SAMPLE_TOLERANCE = 1e-5

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
# What Arrow's string -> float cast (the importers') accepts, surrounding whitespace stripped.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


# -- raw values -> model inputs (standard library only) -------------------------------------------
def fnv1a64_text(text: str) -> int:
    """FNV-1a 64 of the UTF-8 bytes of `text`."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & _MASK64
    return h


def id_of_text(text: str | None, hash_size: int) -> int:
    """0 for a missing value (None or ""), else 1 + fnv1a64(text) % (hash_size - 1)."""
    if text is None or text == "":
        return 0
    return 1 + fnv1a64_text(text) % (hash_size - 1)


def dense_value(raw: Any, col: dict[str, Any]) -> float:
    """The model's input for one raw dense value; ValueError naming the column for a bad one."""
    value = math.nan
    if isinstance(raw, (bool, int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if text:
            if not _NUMBER.fullmatch(text):
                raise ValueError(f"column {col['column']!r}: expected a number, got {raw!r}")
            value = float(text)
    elif raw is not None:
        raise ValueError(f"column {col['column']!r}: expected a number, got {raw!r}")
    if math.isinf(value):
        raise ValueError(f"column {col['column']!r}: expected a finite number, got {raw!r}")
    if math.isnan(value):
        value = float(col["fill"])
    if col.get("clamp_min") is not None:
        value = max(value, float(col["clamp_min"]))
    return math.log1p(value) if col["transform"] == "log1p" else value


def _text(raw: Any, column: str) -> str | None:
    """The text a value was hashed by; None when missing."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if math.isnan(raw):
            return None
        if raw.is_integer():
            return str(int(raw))
    raise ValueError(f"column {column!r}: a categorical value must be text or a whole number, "
                     f"got {raw!r}")


def _one_id(raw: Any, col: dict[str, Any]) -> int:
    column, size = col["column"], int(col["hash_size"])
    if col["hashing"] == "identity":
        if raw is None or raw == "" or (isinstance(raw, float) and math.isnan(raw)):
            return 0
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        elif isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < size:
            raise ValueError(f"column {column!r}: expected an id in [0, {size}), got {raw!r}")
        return raw
    text = _text(raw, column)
    if text is not None and col.get("slice"):
        text = text.strip()
        if col.get("pattern") and not re.fullmatch(col["pattern"], text, re.ASCII):
            raise ValueError(f"column {column!r}: {raw!r} does not match {col['pattern']!r}")
        start, stop = col["slice"]
        text = text[start:stop]
    return id_of_text(text, size)


def sparse_ids(raw: Any, col: dict[str, Any]) -> list[int]:
    """The ids of one raw value: exactly one for a single-valued column, any number for a list."""
    if not col["multi"]:
        return [_one_id(raw, col)]
    if raw is None:
        return []
    if isinstance(raw, str):
        if col.get("list_sep") is None:
            raise ValueError(f"column {col['column']!r}: expected a list of values, got {raw!r}")
        raw = raw.split(col["list_sep"])
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"column {col['column']!r}: expected a list of values, got {raw!r}")
    ids = [_one_id(v, col) for v in raw]
    return ids if col["hashing"] == "identity" else [i for i in ids if i != 0]


def featurize(rows: list[dict[str, Any]],
              spec: dict[str, Any]) -> tuple[list[list[float]], list[int], list[int]]:
    """(dense rows [B][D], values [N], lengths [F * B], feature-major) of raw rows."""
    columns = {c["column"] for c in spec["dense"]} | {c["column"] for c in spec["sparse"]}
    for i, row in enumerate(rows):
        missing = sorted(columns - set(row))
        if missing:
            raise ValueError(f"row {i}: no column {missing[0]!r} (give None or '' for a missing value)")
    dense = [[dense_value(row[c["column"]], c) for c in spec["dense"]] for row in rows]
    values: list[int] = []
    lengths: list[int] = []
    for col in spec["sparse"]:
        for row in rows:
            ids = sparse_ids(row[col["column"]], col)
            values.extend(ids)
            lengths.append(len(ids))
    return dense, values, lengths


# -- the exported program ------------------------------------------------------------------------
class ServingModel:
    """An exported program with its preprocessing. Programs run under `torch.inference_mode`.

    Inputs of the program: dense float32 [B, D] (after the rules above; normalized inside),
    values int64 [N] and lengths int64 [F, B] (the ids of feature f for row b are the next
    lengths[f, b] values, feature-major as in a KeyedJaggedTensor). Output: logits float32 [B].
    """

    def __init__(self, directory: Path, program: Any, manifest: dict[str, Any],
                 spec: dict[str, Any]) -> None:
        self.directory, self.program, self.manifest, self.spec = directory, program, manifest, spec
        self.keys: list[str] = list(manifest["sparse_keys"])

    def logits(self, dense: Any, values: Any, lengths: Any) -> Any:
        """Logits float32 [B] of program inputs (see the class docstring)."""
        import torch

        with torch.inference_mode():
            return self.program(dense.to(torch.float32), values.to(torch.int64),
                                lengths.to(torch.int64).reshape(len(self.keys), dense.shape[0]))

    def predict(self, dense: Any, kjt: Any) -> Any:
        """Click probabilities [B] of preprocessed inputs: dense [B, D], a KeyedJaggedTensor."""
        import torch

        if list(kjt.keys()) != self.keys:
            raise ValueError(f"the KeyedJaggedTensor's keys must be {self.keys}, got {list(kjt.keys())}")
        return torch.sigmoid(self.logits(dense, kjt.values(), kjt.lengths()))

    def tensors(self, rows: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
        """Program inputs (dense, values, lengths) of raw rows."""
        import torch

        dense, values, lengths = featurize(rows, self.spec)
        return (torch.tensor(dense, dtype=torch.float32).reshape(len(rows), len(self.spec["dense"])),
                torch.tensor(values, dtype=torch.int64),
                torch.tensor(lengths, dtype=torch.int64).reshape(len(self.keys), len(rows)))

    def score_rows(self, rows: list[dict[str, Any]], batch_size: int = 4096) -> list[float]:
        """Click probabilities of raw rows, preprocessed exactly as the importer did."""
        import torch

        scores: list[float] = []
        for start in range(0, len(rows), batch_size):
            logits = self.logits(*self.tensors(rows[start:start + batch_size]))
            scores.extend(torch.sigmoid(logits).tolist())
        return scores

    def check_samples(self, int8: bool = False) -> float:
        """Max |difference| between the program's outputs on the stored sample inputs and the
        stored outputs; RuntimeError above the tolerance."""
        import torch

        samples = torch.load(self.directory / SAMPLES_FILE, weights_only=True)
        expected = samples["logits_int8" if int8 else "logits"]
        got = self.logits(samples["dense"], samples["values"], samples["lengths"])
        diff = float((got - expected).abs().max()) if expected.numel() else 0.0
        if not diff <= SAMPLE_TOLERANCE:
            raise RuntimeError(f"{self.directory}: the program's outputs on {SAMPLES_FILE} differ from "
                               f"the stored ones by {diff:.3g} (> {SAMPLE_TOLERANCE})")
        return diff


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _versions_note(manifest: dict[str, Any]) -> None:
    import fbgemm_gpu
    import torch

    exported = manifest.get("versions", {})
    here = {"torch": torch.__version__, "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "?")}
    for name, version in here.items():
        then = exported.get(name, "")
        if then.split(".")[:2] != version.split(".")[:2]:
            warnings.warn(f"exported with {name} {then}, loading with {version}", stacklevel=3)


def load(directory: str | Path, int8: bool = False, check: bool = True) -> ServingModel:
    """The artifact in `directory`: its program (the int8 one with `int8`) and preprocessing.

    With `check`, the files' SHA-256 are verified and the program is run on the stored sample
    inputs (RuntimeError if an output differs by more than 1e-5).
    """
    import logging

    import fbgemm_gpu  # noqa: F401  (registers the operators the programs call)
    import torch

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{directory}: artifact format {manifest.get('format')!r}; "
                         f"this loader reads {FORMAT}")
    entry = manifest["int8"] if int8 else manifest["program"]
    if entry is None:
        raise ValueError(f"{directory}: no int8 program; export with --int8")
    if check:
        for name, digest in manifest["files"].items():
            if sha256_file(directory / name) != digest:
                raise RuntimeError(f"{directory / name}: SHA-256 differs from {MANIFEST_FILE}")
    _versions_note(manifest)
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    serde.setLevel(logging.ERROR)  # "Symbol uN did not appear in the graph" notes
    try:
        program = torch.export.load(directory / entry["file"]).module()
    finally:
        serde.setLevel(level)
    spec = json.loads((directory / PREPROCESSING_FILE).read_text())
    if spec.get("format") != FORMAT:
        raise ValueError(f"{directory / PREPROCESSING_FILE}: format {spec.get('format')!r}; "
                         f"this loader reads {FORMAT}")
    model = ServingModel(directory, program, manifest, spec)
    if check:
        model.check_samples(int8)
    return model


def main(argv: list[str]) -> int:
    """`python rankitect_serving.py DIR [ROWS.jsonl|-] [--int8]`: one probability per row."""
    args = [a for a in argv if a != "--int8"]
    if not 1 <= len(args) <= 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    model = load(args[0], int8="--int8" in argv)
    source = sys.stdin if len(args) == 1 or args[1] == "-" else open(args[1])
    with source:
        rows = [json.loads(line) for line in source if line.strip()]
    for score in model.score_rows(rows):
        print(f"{score:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
