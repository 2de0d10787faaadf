"""Model shapes, normalisation, building from config, input stacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiosetflow.learning.inputs import channel_stats, stack_channels
from audiosetflow.learning.models import AudioCNN, DenseNet, build_model


@pytest.mark.parametrize(("channels", "frames"), [(1, 431), (3, 87), (2, 16), (1, 5)])
def test_cnn_forward_shape_any_length(channels, frames):
    torch.manual_seed(0)
    m = AudioCNN(128, channels).eval()
    out = m(torch.randn(4, channels, 128, frames))
    assert out.shape == (4,)
    assert torch.isfinite(out).all()


def test_dense_forward_shape():
    m = DenseNet(5).eval()
    assert m(torch.randn(7, 5)).shape == (7,)


def test_normalization_is_applied_and_stored():
    m = DenseNet(3, hidden=(4,)).eval()
    x = torch.tensor([[10.0, 20.0, 30.0]])
    m.set_normalization(np.array([10.0, 20.0, 30.0]), np.array([2.0, 0.0, 1.0]))
    assert torch.allclose(m.normalize(x), torch.zeros(1, 3))
    assert m.std[1] == 1.0  # zero std replaced by 1
    assert {"mean", "std"} <= set(m.state_dict())


def test_build_model_from_config_reproduces_outputs():
    torch.manual_seed(1)
    m = AudioCNN(32, 2, width=8).eval()
    m2 = build_model("cnn", m.config)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    x = torch.randn(3, 2, 32, 40)
    assert torch.allclose(m(x), m2(x))
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("rnn", {})


def test_stack_channels_resamples_extras_to_log_mel_grid():
    lm = np.zeros((2, 8, 10), np.float32)
    centroid = np.arange(10, dtype=np.float32)[None, None].repeat(2, axis=0)  # (2, 1, 10)
    mfcc = np.stack([np.linspace(0, 1, 3)[:, None].repeat(5, 1)] * 2).astype(np.float32)  # (2,3,5)
    X = stack_channels(lm, {"spectral_centroid": centroid, "mfcc": mfcc})
    assert X.shape == (2, 3, 8, 10) and X.dtype == np.float32
    assert np.allclose(X[:, 1], np.arange(10))  # one row broadcast over all rows
    assert np.allclose(X[0, 2, :, 0], np.linspace(0, 1, 8))  # rows interpolated
    assert stack_channels(lm[0], [centroid[0]]).shape == (2, 8, 10)


def test_channel_stats():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(50, 2, 4, 30)).astype(np.float32)
    X[:, 1] += 10
    mean, std = channel_stats(X)
    assert mean.shape == (2, 4, 1)
    assert np.allclose(mean[0], 3.0, atol=0.2) and np.allclose(mean[1], 13.0, atol=0.2)
    assert np.allclose(std, 2.0, atol=0.2)
