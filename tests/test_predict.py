"""Inference on a net you have, in either array mode; predict knows nothing of the run store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as onp
import pytest
from mxnet import init
from mxnet.gluon import nn

from d2l_helpers import predict

REPO = Path(__file__).resolve().parent.parent



def flat(img):
    """A stand-in test transform: HWC uint8 -> a flat float vector."""
    return img.reshape(-1).astype("float32") / 255


def dense_net():
    mx.random.seed(0)
    net = nn.Dense(3, in_units=6)
    net.initialize(init.Xavier())
    return net


def reference(net, images) -> onp.ndarray:
    W, b = net.weight.data().asnumpy(), net.bias.data().asnumpy()
    logits = onp.stack([i.reshape(-1).astype("float32") / 255 for i in images]) @ W.T + b
    e = onp.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


IMAGES = [onp.random.RandomState(k).randint(0, 256, (1, 2, 3)).astype("uint8") for k in range(5)]


def test_predict_proba_in_either_mode(array_mode):
    net = dense_net()
    probs = predict.predict_proba(net, IMAGES, flat, batch_size=2)   # several batches
    assert probs.shape == (5, 3) and probs.dtype == onp.float32
    onp.testing.assert_allclose(probs, reference(net, IMAGES), rtol=1e-5, atol=1e-6)
    onp.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert predict.predict_proba(net, [], flat).shape == (0, 0)


def test_predict_proba_takes_mxnet_arrays_of_the_callers_mode(array_mode):
    from d2l_helpers import arrays

    net = dense_net()
    images = [arrays.array(i, dtype="uint8") for i in IMAGES[:2]]
    onp.testing.assert_allclose(predict.predict_proba(net, images, flat),
                                reference(net, IMAGES[:2]), rtol=1e-5, atol=1e-6)


def test_classify_and_top_k(array_mode):
    net = dense_net()
    expected = reference(net, IMAGES[:1])[0]
    name, p = predict.classify(net, IMAGES[0], flat, ["a", "b", "c"])
    assert name == "abc"[int(expected.argmax())] and p == pytest.approx(expected.max(), rel=1e-5)
    assert predict.top_k(onp.array([0.2, 0.5, 0.3]), ["a", "b", "c"], k=2) == \
        [(1, "b", 0.5), (2, "c", 0.3)]


def test_dataset_predictions_and_confusion_matrix():
    class Split:                                       # the shape of data.HotdogImages
        labels = [0, 1, 1]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return IMAGES[i], self.labels[i]

    net = dense_net()
    probs, labels = predict.dataset_predictions(net, Split(), flat)
    onp.testing.assert_allclose(probs, reference(net, IMAGES[:3]), rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [0, 1, 1]
    cm = predict.confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert cm.tolist() == [[1, 1], [1, 2]] and cm.dtype == onp.int64


def test_predict_is_pure_inference():
    """No run store (load_classifier lives in runs) and no array-mode branches of its own."""
    source = (REPO / "d2l_helpers" / "predict.py").read_text()
    assert "is_np_array" not in source and "npx." not in source
    assert not hasattr(predict, "load_classifier")
    code = ("import sys, d2l_helpers.predict\n"
            "assert 'd2l_helpers.runs' not in sys.modules, 'predict imported runs'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
