"""Test helpers (not a test module): the trainer on arrays with a model built beforehand."""

from __future__ import annotations

from audiosetflow.learning.trainer import FitResult, FitSettings, fit_arrays


def fit_prebuilt(m, Xtr, ytr, Xva, yva, *, batch_size: int = 32, **settings) -> FitResult:
    """:func:`~audiosetflow.learning.trainer.fit_arrays` of an already built model ``m``
    (trained in place: its initial weights are put back after the trainer seeds)."""
    state = {k: v.clone() for k, v in m.state_dict().items()}
    name = settings.pop("name", "model")
    logger = settings.pop("logger", None)

    def build():
        m.load_state_dict(state)
        return m

    _, res = fit_arrays(
        build, Xtr, ytr, Xva, yva, settings=FitSettings(**settings), batch_size=batch_size,
        logger=logger, name=name,
    )  # fmt: skip
    return res
