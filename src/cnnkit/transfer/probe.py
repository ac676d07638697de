"""Linear probes: logistic regressions on a stage's pooled features (the notes' "linear classifier on features
from different stages"), one row per stage."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import CnnkitError
from ..progress import progress_bar
from .features import extract_features, transfer_preprocess
from .stage_groups import stages


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                     c_values: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 1.0), seed: int = 0,
                     groups: torch.Tensor | None = None, test_views: Sequence[torch.Tensor] = (),
                     progress: bool = False, scoring: str = "accuracy") -> dict:
    """Logistic regression on standardised features, its regularisation chosen by 3-fold cross-validation on
    the training features only, by ``scoring``: "accuracy", or "neg_log_loss", which rates the probabilities
    and so also ranks the strengths that a handful of images leaves tied on accuracy. Returns test accuracy
    (%), the chosen C, the cross-validation score, seconds, and the test images' predicted class probabilities
    (columns in class order), for ensembles; and ``weight`` and ``bias``, the fitted probe as one linear layer
    on the raw features (:func:`folded_head`).

    ``groups``: when ``train_x`` holds several views of each image (e.g. an image and its mirror image), the
    image each row came from. The folds then keep an image's views together: split apart, a view in the
    validation fold is nearly a copy of one in the training folds and cross-validation rewards the weakest
    regularisation (measured: it chose C = 1, 3 points worse on the test set than the C it picks this way).
    ``test_views``: other views of the test images (e.g. mirrored), whose predicted probabilities are averaged
    with those of ``test_x`` (test-time augmentation). ``progress``: one step per logistic-regression fit (3 per
    candidate C, then the final one), as a bar or plain lines (cnnkit.progress)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise CnnkitError("linear probes use scikit-learn, which is not installed; run: "
                          "pip install 'cnnkit[analysis]'") from None
    if len(train_x) != len(train_y) or (groups is not None and len(groups) != len(train_x)):
        raise CnnkitError(f"linear probe: {len(train_x)} feature rows, {len(train_y)} labels"
                          + (f" and {len(groups)} groups" if groups is not None else "") + "; they must match.")
    for view in test_views:
        if view.shape != test_x.shape:
            raise CnnkitError(f"linear probe: a test view has shape {tuple(view.shape)}, the test features "
                              f"{tuple(test_x.shape)}; every view must hold the same images.")
    start = time.perf_counter()
    scaler = StandardScaler().fit(train_x.float().numpy())
    xtr = scaler.transform(train_x.float().numpy())
    ytr, yte = train_y.numpy(), test_y.numpy()
    best_c, best_score = c_values[0], -math.inf
    searched = len(c_values) > 1
    bar = progress_bar(3 * len(c_values) * searched + 1, f"linear probe on {xtr.shape[1]} features", unit="fit",
                       enabled=progress)
    if searched:
        if groups is None:
            folds, fold_groups = StratifiedKFold(3, shuffle=True, random_state=seed), None
        else:
            folds, fold_groups = GroupKFold(3), groups.numpy()
        for c in c_values:
            score = cross_val_score(LogisticRegression(C=c, max_iter=3000, random_state=seed), xtr, ytr, cv=folds,
                                    groups=fold_groups, scoring=scoring).mean()
            if score > best_score:
                best_c, best_score = c, score
            bar.update(3)
            bar.set_postfix(C=c, **{f"cv_{scoring}": f"{score:.4f}"})
    classifier = LogisticRegression(C=best_c, max_iter=3000, random_state=seed).fit(xtr, ytr)
    bar.update(1)
    bar.close()
    views = (test_x, *test_views)
    probabilities = sum(classifier.predict_proba(scaler.transform(view.float().numpy())) for view in views) / len(views)
    accuracy = 100.0 * float((classifier.classes_[probabilities.argmax(1)] == yte).mean())
    # Columns for every class 0..max label, zero for a class the training labels lacked.
    full = torch.zeros(len(yte), int(max(ytr.max(), yte.max())) + 1, dtype=torch.float32)
    full[:, torch.as_tensor(classifier.classes_)] = torch.as_tensor(probabilities, dtype=torch.float32)
    weight, bias = folded_head(scaler, classifier, full.shape[1])
    cv_accuracy = 100.0 * float(best_score) if searched and scoring == "accuracy" else None
    return {"accuracy": accuracy, "C": best_c, "cv_accuracy": cv_accuracy,
            "cv_score": float(best_score) if searched else None,
            "features": xtr.shape[1], "test_views": len(views), "seconds": time.perf_counter() - start,
            "probabilities": full, "weight": weight, "bias": bias}


def folded_head(scaler, classifier, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The standardisation and the logistic regression as one linear layer on the raw features: (weight
    (num_classes, D), bias (num_classes,)) whose softmax is the regression's predicted probabilities, so the
    probe can become a network's own output layer (:func:`cnnkit.transfer.heads.set_linear_head`).

    With z = (x - mean) / scale, coef @ z + intercept = (coef / scale) @ x + (intercept - coef @ (mean / scale)).
    scikit-learn keeps one row for two classes (the log-odds of the second); rows -w/2 and +w/2 give the same
    softmax. A class the training labels lacked gets no row there: it gets a bias that softmax never picks."""
    coef = torch.as_tensor(classifier.coef_, dtype=torch.float64)
    intercept = torch.as_tensor(classifier.intercept_, dtype=torch.float64)
    if coef.shape[0] == 1:
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    mean = torch.as_tensor(scaler.mean_, dtype=torch.float64)
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float64)
    weight = torch.zeros(num_classes, coef.shape[1], dtype=torch.float64)
    bias = torch.full((num_classes,), -1e4, dtype=torch.float64)
    rows = torch.as_tensor(classifier.classes_, dtype=torch.long)
    weight[rows] = coef / scale
    bias[rows] = intercept - (coef / scale) @ mean
    return weight.float(), bias.float()


def linear_probe(model: nn.Module, data, stage: str | Sequence[str] | None = None, *, input_size: int | None = None,
                 batch_size: int = 64, progress: bool = False) -> list[dict]:
    """The notes' "linear classifier on features from different stages": for each stage (default: all below
    the classifier), a logistic regression on its pooled features of ``data.train``, scored on ``data.test``.
    Returns one row per stage: stage, accuracy (%), features, C, seconds."""
    names = [stage] if isinstance(stage, str) else list(stage or [s.name for s in stages(model)[:-1]])
    preprocess = transfer_preprocess(model, input_size=input_size, data_mean=data.mean, data_std=data.std)
    start = time.perf_counter()
    train = extract_features(model, data.train, names, preprocess=preprocess, batch_size=batch_size, progress=progress)
    test = extract_features(model, data.test, names, preprocess=preprocess, batch_size=batch_size, progress=progress)
    extraction = time.perf_counter() - start
    rows = []
    for name in names:
        row = fit_linear_probe(train[name], data.train.labels, test[name], data.test.labels, progress=progress)
        rows.append({"stage": name, **row, "extraction_seconds": extraction})
    return rows


def format_probe_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<14} {'features':>8} {'accuracy':>9} {'C':>6}"]
    best = max(r["accuracy"] for r in rows)
    for r in rows:
        mark = "  <- best" if r["accuracy"] == best else ""
        lines.append(f"{r['stage']:<14} {r['features']:>8} {r['accuracy']:>8.2f}% {r['C']:>6g}{mark}")
    return "\n".join(lines)
