"""Training examples/s of the registry-built DLRM over torchrec's own DLRM, same sizes, same batches.

Both models: 26 sparse columns (one EmbeddingBagCollection table each), 13 dense, E=16,
bottom MLP [64, 16], top MLP [128, 64, 1], SGD; batches come from one list, fed to both in turn.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from benchmarks.common import interleaved_rates, print_table
from benchmarks.gpu_timing import train_pass
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate
from rankitect.model import build_model
from search_spaces import baseline


def torchrec_dlrm(schema, dim: int, bottom: tuple[int, ...] = (64,), top: tuple[int, ...] = (128, 64),
                  device: torch.device | None = None) -> DLRM:
    """torchrec's DLRM with the sizes of `search_spaces.baselines.dlrm(schema, bottom, top)`."""
    tables = [EmbeddingBagConfig(name=f"t_{c.name}", embedding_dim=dim, num_embeddings=c.hash_size,
                                 feature_names=[c.name]) for c in schema.sparse]
    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables=tables, device=device),
                 dense_in_features=schema.num_dense, dense_arch_layer_sizes=[*bottom, dim],
                 over_arch_layer_sizes=[*top, 1], dense_device=device)
    # .to also moves what the constructor leaves on the CPU (the interaction's triu_indices buffer).
    return model.to(device) if device is not None else model


def trainer(model, forward, batches, lr: float, device: torch.device | None = None):
    """A callable that trains `model` one pass over `batches` (SGD) and returns the rows seen."""
    return train_pass(model, batches, torch.optim.SGD(model.parameters(), lr=lr), device or torch.device("cpu"),
                      forward=forward)


def measure(rows: int = 120_000, batch_size: int = 2048, hash_size: int = 20_000,
            rounds: int = 5, workdir: Path | None = None) -> dict[str, float]:
    work = Path(workdir or tempfile.mkdtemp(prefix="rk-bench-"))
    cfg = SynthConfig(days=1, rows_per_day=rows, num_sparse=26, num_dense=13,
                      cardinality=hash_size - 1, tag_mean_len=0.0)
    generate(work / "criteo_like", cfg, force=True)
    ds = Dataset.open(str(work / "criteo_like"))
    batches = list(BatchLoader(ds, ds.dates, batch_size, drop_last=True))
    schema = ds.schema
    torch.manual_seed(0)
    ours = build_model(baseline("dlrm", schema), schema)
    torch.manual_seed(0)
    theirs = torchrec_dlrm(schema, schema.embedding_dim)
    rates = interleaved_rates({
        "rankitect": trainer(ours, lambda m, b: m(b.dense, b.sparse), batches, 0.01),
        "torchrec": trainer(theirs, lambda m, b: m(b.dense, b.sparse).squeeze(1), batches, 0.01),
    }, rounds)
    rates["ratio"] = rates["rankitect"] / rates["torchrec"]
    rates["sizes"] = (f"{schema.num_sparse} tables x {hash_size} rows, E={schema.embedding_dim}, "
                      f"{schema.num_dense} dense, batch {batch_size}, {len(batches)} batches x {rounds} rounds")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    r = measure(rounds=args.rounds)
    print_table(f"DLRM training speed ({r['sizes']}, torch threads={torch.get_num_threads()})",
                ["model", "examples/s"],
                [["rankitect registry DLRM", r["rankitect"]], ["torchrec.models.dlrm.DLRM", r["torchrec"]]])
    print(f"ratio rankitect / torchrec = {r['ratio']:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
