"""The mask head: layouts and parameter names, the loss against NumPy (picked class channel,
ignored pixels, gradient), the prediction's class channel."""
import mxnet as mx
import numpy as np

from simpledet.config.mask_rcnn import MaskHeadConfig
from simpledet.models.mask_head import ConvMaskHead


def bind_run(symbol, inputs, grad_of=()):
    args = {k: mx.nd.array(v, dtype="float32") for k, v in inputs.items()}
    grads = {k: mx.nd.zeros(args[k].shape) for k in grad_of}
    req = {k: ("write" if k in grads else "null") for k in args}
    exe = symbol.bind(mx.cpu(), args, args_grad=grads, grad_req=req)
    outputs = exe.forward(is_train=bool(grads))
    if grads:
        exe.backward([mx.nd.ones(o.shape) for o in outputs])
    mx.nd.waitall()
    return [o.asnumpy() for o in outputs], {k: g.asnumpy() for k, g in grads.items()}


def test_output_layout_and_parameter_names():
    head = ConvMaskHead(MaskHeadConfig(conv_channels=8), num_classes=5, mask_size=28)
    logit = head.get_output(mx.sym.var("roi_feat"))
    _, (shape,), _ = logit.infer_shape(roi_feat=(6, 16, 14, 14))
    assert shape == (6, 5, 28, 28)
    params = [a for a in logit.list_arguments() if a != "roi_feat"]
    assert params == [f"mask_conv{i}_{p}" for i in range(1, 5) for p in ("weight", "bias")] + [
        "mask_deconv_weight", "mask_deconv_bias", "mask_logit_weight", "mask_logit_bias"]
    shapes, _, _ = logit.infer_shape(roi_feat=(6, 16, 14, 14))
    named = dict(zip(logit.list_arguments(), shapes))
    assert named["mask_deconv_weight"] == (8, 8, 2, 2)
    assert named["mask_logit_weight"] == (5, 8, 1, 1)


def numpy_mask_loss(logits, labels, targets):
    picked = logits[np.arange(len(labels)), np.maximum(labels, 0).astype(int)]
    valid = targets >= 0
    z = np.clip(targets, 0, 1)
    per_pixel = np.logaddexp(0, picked) - picked * z
    return (per_pixel * valid).sum() / max(valid.sum(), 1), picked, valid, z


def test_loss_is_bce_of_the_gt_class_channel_over_valid_pixels():
    rng = np.random.default_rng(0)
    rois, classes, size = 5, 4, 6
    logits = rng.normal(0, 2, (rois, classes, size, size))
    labels = np.array([2, 0, 3, -1, 1], np.float32)
    targets = (rng.random((rois, size, size)) > 0.5).astype(np.float32)
    targets[1] = -1  # background and ignored rois carry ignored targets
    targets[3] = -1
    targets[4, :2] = -1  # a partially ignored mask
    head = ConvMaskHead(MaskHeadConfig(loss_weight=1.0), num_classes=classes, mask_size=size)
    loss = head.get_loss(mx.sym.var("logit"), mx.sym.var("label"), mx.sym.var("target"))
    (value,), grads = bind_run(loss["mask_loss"], {"logit": logits, "label": labels,
                                                   "target": targets}, grad_of=["logit"])
    expected, picked, valid, z = numpy_mask_loss(logits, labels, targets)
    np.testing.assert_allclose(value, [expected], rtol=1e-5)
    # d loss / d logit = (sigmoid - z) / count on the picked channel of valid pixels only.
    grad = np.zeros_like(logits)
    rows = np.arange(rois)
    grad[rows, np.maximum(labels, 0).astype(int)] = (1 / (1 + np.exp(-picked)) - z) * valid
    np.testing.assert_allclose(grads["logit"], grad / valid.sum(), rtol=1e-4, atol=1e-7)


def test_all_ignored_targets_give_zero_loss_and_gradient():
    head = ConvMaskHead(MaskHeadConfig(), num_classes=3, mask_size=4)
    loss = head.get_loss(mx.sym.var("logit"), mx.sym.var("label"), mx.sym.var("target"))
    (value,), grads = bind_run(loss["mask_loss"], {
        "logit": np.ones((2, 3, 4, 4)), "label": np.zeros(2), "target": -np.ones((2, 4, 4))},
        grad_of=["logit"])
    assert value[0] == 0 and not grads["logit"].any()


def test_loss_weight_scales_the_loss():
    rng = np.random.default_rng(1)
    inputs = {"logit": rng.normal(size=(3, 3, 4, 4)), "label": np.array([1, 2, 1]),
              "target": (rng.random((3, 4, 4)) > 0.5)}
    values = []
    for weight in (1.0, 2.5):
        head = ConvMaskHead(MaskHeadConfig(loss_weight=weight), num_classes=3, mask_size=4)
        loss = head.get_loss(mx.sym.var("logit"), mx.sym.var("label"), mx.sym.var("target"))
        values.append(bind_run(loss["mask_loss"], inputs)[0][0][0])
    np.testing.assert_allclose(values[1], 2.5 * values[0], rtol=1e-6)


def test_prediction_is_the_sigmoid_of_the_detected_class_channel():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 5, 3, 3))
    classes = np.array([3, 1, -1, 4], np.float32)  # -1: an unused detection row
    head = ConvMaskHead(MaskHeadConfig(), num_classes=5, mask_size=3)
    prob = head.get_prediction(mx.sym.var("logit"), mx.sym.var("classes"))
    (value,), _ = bind_run(prob, {"logit": logits, "classes": classes})
    expected = 1 / (1 + np.exp(-logits[np.arange(4), np.maximum(classes, 0).astype(int)]))
    assert value.shape == (4, 3, 3)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
