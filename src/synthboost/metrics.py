"""Classification metrics (accuracy, balanced accuracy, macro-F1, per-class precision/recall, confusion
matrix).  Generator quality (FID, KID, IS, precision/recall, CAS) lives in ``quality.py``."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

NUM_CLASSES = 10


def balanced_accuracy(y_true, y_pred) -> float:
    return float(skm.balanced_accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def classification_metrics(y_true, y_pred, *, minority_classes=()) -> dict[str, float]:
    """Flat metric dict: headline scores, per-class precision/recall, and the minority classes' mean recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(NUM_CLASSES))
    prec, rec, _, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    for k in labels:
        out[f"precision_{k}"] = float(prec[k])
        out[f"recall_{k}"] = float(rec[k])
    if len(minority_classes):
        out["minority_recall"] = float(np.mean([rec[k] for k in minority_classes]))
    return out


def confusion(y_true, y_pred) -> np.ndarray:
    return skm.confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(NUM_CLASSES)))
