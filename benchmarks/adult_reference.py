"""The non-neural references of bench_adult: scikit-learn's logistic regression and LightGBM,
trained on the same dates of ../shared/data/adult.parquet as Rankitect's runs.

Benchmark-only dependencies (`make setup-bench`): scikit-learn, lightgbm.
- logistic regression: one-hot categoricals, standardized log1p numbers, L2 (C=1), lbfgs to
  convergence; the usual strong linear baseline on this table.
- LightGBM: native categoricals, learning rate 0.05, up to 3000 trees with early stopping on
  the validation date (100 rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rankitect.metrics import evaluate_logits


@dataclass(frozen=True)
class Split:
    dense: np.ndarray  # (N, D) float64
    codes: np.ndarray  # (N, S) int64: category codes over the whole table
    text: np.ndarray  # (N, S) str
    labels: np.ndarray  # (N,) float64
    days: np.ndarray  # (N,) str


def load(path: Path, dense: list[str], sparse: list[str], day_column: str = "day") -> Split:
    table = pq.read_table(path)
    text = np.stack([np.array([str(v) for v in table.column(c).to_pylist()]) for c in sparse], 1)
    codes = np.stack([np.unique(text[:, j], return_inverse=True)[1] for j in range(len(sparse))], 1)
    return Split(dense=np.stack([np.asarray(table.column(c).to_pylist(), np.float64) for c in dense], 1),
                 codes=codes.astype(np.int64), text=text,
                 labels=np.asarray(table.column("label").to_pylist(), np.float64),
                 days=np.array([str(d)[:10] for d in table.column(day_column).to_pylist()]))


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    m = evaluate_logits(np.log(p / (1 - p)), labels)
    return {"ne": m.ne, "auc": m.auc}


def references(split: Split, train: list[str], valid: list[str], test: list[str]) -> dict[str, dict[str, float]]:
    """{name: {valid_ne, test_ne, test_auc}} of scikit-learn's LR and LightGBM."""
    import lightgbm
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rows = {k: np.isin(split.days, dates) for k, dates in (("train", train), ("valid", valid), ("test", test))}
    y = split.labels
    scaler = StandardScaler().fit(np.log1p(np.clip(split.dense[rows["train"]], 0, None)))
    onehot = OneHotEncoder(handle_unknown="ignore").fit(split.text[rows["train"]])

    def features(mask: np.ndarray):
        numbers = scaler.transform(np.log1p(np.clip(split.dense[mask], 0, None)))
        return hstack([csr_matrix(numbers), onehot.transform(split.text[mask])]).tocsr()

    lr = LogisticRegression(max_iter=5000).fit(features(rows["train"]), y[rows["train"]])
    table = np.concatenate([split.dense, split.codes], 1)
    categorical = list(range(split.dense.shape[1], table.shape[1]))
    gbm = lightgbm.LGBMClassifier(n_estimators=3000, learning_rate=0.05, verbose=-1)
    gbm.fit(table[rows["train"]], y[rows["train"]], eval_X=table[rows["valid"]], eval_y=y[rows["valid"]],
            categorical_feature=categorical, callbacks=[lightgbm.early_stopping(100, verbose=False)])
    out = {}
    for name, predict in (("scikit-learn LR", lambda m: lr.predict_proba(features(m))[:, 1]),
                          ("LightGBM", lambda m: gbm.predict_proba(table[m])[:, 1])):
        v, t = _scores(predict(rows["valid"]), y[rows["valid"]]), _scores(predict(rows["test"]), y[rows["test"]])
        out[name] = {"valid_ne": v["ne"], "test_ne": t["ne"], "test_auc": t["auc"]}
    return out
