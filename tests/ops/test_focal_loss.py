"""Tests of simpledet.ops.sigmoid_focal_loss (_contrib_SigmoidFocalLoss), CPU: hand values, a
float64 NumPy reference of the loss and its analytic gradient (extreme logits, ignored anchors,
no foreground, batch 2), numerical gradients, a Module graph with MakeLoss, and equality with a
composite of stock MXNet ops."""
import mxnet as mx
import numpy as np
import pytest

from simpledet.ops.focal_loss import sigmoid_focal_loss


# ---------------------------------------------------------------- NumPy reference (float64)
def reference(logits, labels, alpha=0.25, gamma=2.0):
    """(loss, d loss / d logits) of logits (..., C), labels (...), in float64."""
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.float64)
    classes = x.shape[-1]
    target = (labels[..., None] == np.arange(1, classes + 1)).astype(np.float64)
    valid = (labels >= 0)[..., None].astype(np.float64)
    log_p, log_q = -np.logaddexp(0, -x), -np.logaddexp(0, x)  # log sigmoid(x), log sigmoid(-x)
    p, q = np.exp(log_p), np.exp(log_q)
    pos_loss = -alpha * q ** gamma * log_p
    neg_loss = -(1 - alpha) * p ** gamma * log_q
    pos_grad = alpha * q ** gamma * (gamma * p * log_p - q)
    neg_grad = (1 - alpha) * p ** gamma * (p - gamma * q * log_q)
    norm = max(int((labels > 0).sum()), 1)
    loss = (valid * (target * pos_loss + (1 - target) * neg_loss)).sum() / norm
    grad = valid * (target * pos_grad + (1 - target) * neg_grad) / norm
    return loss, grad


def run(logits, labels, head=1.0, dtype=np.float32, **kwargs):
    """Forward and backward of the op on NDArrays: (loss, logits.grad)."""
    x = mx.nd.array(logits, dtype=dtype)
    y = mx.nd.array(labels, dtype=dtype)
    x.attach_grad()
    with mx.autograd.record():
        loss = sigmoid_focal_loss(x, y, **kwargs)
    loss.backward(mx.nd.array([head], dtype=dtype))
    return loss.asnumpy(), x.grad.asnumpy()


def random_case(rng, batch=2, anchors=300, classes=7, ignore=0.1, background=0.7):
    logits = rng.normal(0, 3, (batch, anchors, classes)).astype(np.float32)
    labels = rng.integers(1, classes + 1, (batch, anchors)).astype(np.float32)
    draw = rng.uniform(size=(batch, anchors))
    labels[draw < background] = 0
    labels[draw < ignore] = -1
    return logits, labels


# ---------------------------------------------------------------- hand-computed
def test_hand_computed_two_anchors():
    # Anchor 0 is class 1: class 1 (x = 0, p = 1/2) is positive, class 2 (x = 2) negative.
    # Anchor 1 is background: both classes negative. One foreground anchor: normalizer 1.
    loss, grad = run([[[0.0, 2.0], [-1.0, 3.0]]], [[1, 0]])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    want = (0.25 * 0.5 ** 2 * np.log(2)
            + sum(0.75 * sig(v) ** 2 * -np.log(1 - sig(v)) for v in (2.0, -1.0, 3.0)))
    assert loss.shape == (1,)
    assert loss[0] == pytest.approx(want, rel=1e-6)
    # d/dx at x = 0, positive: alpha * q^2 * (gamma * p * log p - q) = 0.25/4 * (-ln 2 - 1/2).
    assert grad[0, 0, 0] == pytest.approx(0.25 / 4 * (-np.log(2) - 0.5), rel=1e-6)


def test_gamma_zero_is_alpha_weighted_cross_entropy_and_alpha_half_is_symmetric():
    x, y = [[[1.5, -0.5, 0.25]]], [[3]]
    loss, _ = run(x, y, gamma=0.0, alpha=0.5)
    p = 1 / (1 + np.exp(-np.array([1.5, -0.5, 0.25])))
    bce = -(np.log(1 - p[0]) + np.log(1 - p[1]) + np.log(p[2]))
    assert loss[0] == pytest.approx(0.5 * bce, rel=1e-6)


def test_normalizer_counts_foreground_anchors_of_the_whole_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (2, 6, 3)).astype(np.float32)
    labels = np.array([[1, 0, 0, 2, -1, 0], [0, 0, 3, 0, 0, -1]], np.float32)  # 3 foreground
    loss, _ = run(logits, labels)
    total, _ = reference(logits, labels)
    assert loss[0] == pytest.approx(total, rel=1e-5)
    unnormalized, _ = run(logits, np.where(labels > 0, 0, labels))  # no foreground: divide by 1
    assert unnormalized[0] > loss[0]


def test_no_foreground_divides_by_one_and_all_ignored_gives_zero():
    logits = np.array([[[0.3, -2.0], [1.0, 4.0]]], np.float32)
    loss, grad = run(logits, [[0, 0]])
    want, want_grad = reference(logits, [[0, 0]])
    assert loss[0] == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5)
    loss, grad = run(logits, [[-1, -1]])
    assert loss[0] == 0.0 and not grad.any()


# ---------------------------------------------------------------- NumPy reference
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.25, 1.0), (0.75, 1.5)])
def test_matches_numpy_reference_forward_and_gradient(alpha, gamma):
    rng = np.random.default_rng(1)
    logits, labels = random_case(rng)
    loss, grad = run(logits, labels, alpha=alpha, gamma=gamma)
    want, want_grad = reference(logits, labels, alpha, gamma)
    assert loss[0] == pytest.approx(want, rel=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=1e-9)


def test_extreme_logits_stay_finite_and_match_reference():
    # +-50 and +-100 logits of both targets: naive log(sigmoid) would give -inf / NaN.
    values = np.array([-100, -50, -20, -1e-3, 0, 1e-3, 20, 50, 100], np.float32)
    logits = np.stack([np.tile(values, (3, 1))] * 2)  # (2, 3, 9)
    labels = np.array([[1, 9, 0], [5, 0, -1]], np.float32)
    for dtype in (np.float32, np.float64):
        loss, grad = run(logits, labels, dtype=dtype)
        want, want_grad = reference(logits, labels)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert loss[0] == pytest.approx(want, rel=1e-6)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-30)
    # Anchor 0 is class 1 with logit -100: a confidently wrong positive, gradient -alpha
    # (p = 0, q = 1) over the 3 foreground anchors; its class-2 logit (-50, negative) gets ~0.
    _, grad = run(logits, labels)
    assert grad[0, 0, 0] == pytest.approx(-0.25 / 3, rel=1e-6)
    assert abs(grad[0, 0, 1]) < 1e-20


def test_output_gradient_scales_the_logit_gradient_and_labels_get_none():
    rng = np.random.default_rng(2)
    logits, labels = random_case(rng, anchors=40, classes=4)
    _, grad1 = run(logits, labels, head=1.0)
    _, grad3 = run(logits, labels, head=-3.0)
    np.testing.assert_allclose(grad3, -3.0 * grad1, rtol=1e-6)
    x, y = mx.nd.array(logits), mx.nd.array(labels)
    y.attach_grad()
    with mx.autograd.record():
        loss = sigmoid_focal_loss(x, y)
    loss.backward()
    assert not y.grad.asnumpy().any()


def test_any_leading_shape_and_float64():
    rng = np.random.default_rng(3)
    logits, labels = random_case(rng, batch=1, anchors=50, classes=3)
    flat = run(logits[0], labels[0], dtype=np.float64)
    batched = run(logits, labels, dtype=np.float64)
    assert flat[0].dtype == np.float64
    assert flat[0][0] == pytest.approx(batched[0][0], rel=1e-12)
    want, want_grad = reference(logits, labels)
    assert flat[0][0] == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(flat[1], want_grad[0], rtol=1e-10, atol=1e-300)


def test_numeric_gradient_float64():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (2, 5, 3))
    labels = np.array([[1, 0, -1, 3, 0], [0, 2, 0, 0, -1]], np.float64)
    sym = sigmoid_focal_loss(mx.sym.Variable("logits"), mx.sym.Variable("labels"), gamma=1.5)
    mx.test_utils.check_numeric_gradient(sym, {"logits": logits, "labels": labels},
                                         grad_nodes=["logits"], numeric_eps=1e-5, rtol=1e-5,
                                         atol=1e-8, dtype=np.float64)


# ---------------------------------------------------------------- stock-op composite
def stock_focal_loss(logits, labels, alpha=0.25, gamma=2.0):
    """The same loss from stock MXNet ops (naive log(p_t): fine for moderate logits)."""
    classes = logits.shape[-1]
    p = mx.nd.sigmoid(logits)
    target = mx.nd.one_hot(labels - 1, depth=classes)  # background (-1) and ignored: all 0
    valid = mx.nd.expand_dims(labels >= 0, axis=-1)
    p_t = target * p + (1 - target) * (1 - p)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    terms = -alpha_t * mx.nd.power(1 - p_t, gamma) * mx.nd.log(p_t)
    norm = mx.nd.maximum(mx.nd.sum(labels > 0), 1)
    return mx.nd.sum(mx.nd.broadcast_mul(terms, valid)) / norm


def test_equals_stock_op_composite_forward_and_gradient():
    rng = np.random.default_rng(5)
    logits, labels = random_case(rng, anchors=500, classes=10)
    results = []
    for fn in (sigmoid_focal_loss, stock_focal_loss):
        x, y = mx.nd.array(logits), mx.nd.array(labels)
        x.attach_grad()
        with mx.autograd.record():
            loss = fn(x, y)
        loss.backward()
        results.append((loss.asnumpy(), x.grad.asnumpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- graphs
def test_module_forward_backward_with_make_loss():
    rng = np.random.default_rng(6)
    batch, anchors, classes = 2, 32, 5
    data = mx.sym.Variable("data")
    labels = mx.sym.Variable("cls_label")
    logits = mx.sym.FullyConnected(data, num_hidden=anchors * classes, name="fc")
    logits = mx.sym.reshape(logits, shape=(0, anchors, classes))
    loss = mx.sym.MakeLoss(sigmoid_focal_loss(logits, labels, name="focal"), name="loss")
    mod = mx.mod.Module(loss, data_names=["data"], label_names=["cls_label"])
    mod.bind(data_shapes=[("data", (batch, 8))], label_shapes=[("cls_label", (batch, anchors))])
    mod.init_params(mx.init.Normal(0.1))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.5})
    x = rng.normal(0, 1, (batch, 8)).astype(np.float32)
    y = rng.integers(0, classes + 1, (batch, anchors)).astype(np.float32)
    y[:, :4] = -1
    batch_data = mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(y)])
    losses = []
    for _ in range(5):
        mod.forward_backward(batch_data)
        losses.append(float(mod.get_outputs()[0].asnumpy()[0]))
        mod.update()
    assert mod.get_outputs()[0].shape == (1,)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # The first step's weight gradient is the reference gradient through the FC layer.
    mod.forward_backward(batch_data)
    arg, _ = mod.get_params()
    fc_out = (x @ arg["fc_weight"].asnumpy().T + arg["fc_bias"].asnumpy())
    _, dlogits = reference(fc_out.reshape(batch, anchors, classes), y)
    grads = dict(zip(mod._exec_group.param_names,  # noqa: SLF001
                     (g[0].asnumpy() for g in mod._exec_group.grad_arrays)))  # noqa: SLF001
    np.testing.assert_allclose(grads["fc_bias"], dlogits.reshape(batch, -1).sum(0), rtol=1e-4,
                               atol=1e-7)


def test_symbolic_shape_and_type_inference():
    sym = sigmoid_focal_loss(mx.sym.Variable("logits"), mx.sym.Variable("labels"))
    _, out_shapes, _ = sym.infer_shape(logits=(2, 120000, 80), labels=(2, 120000))
    assert out_shapes == [(1,)]
    _, out_types, _ = sym.infer_type(logits=np.float64, labels=np.float64)
    assert out_types == [np.float64]
    with pytest.raises(mx.base.MXNetError, match=r"labels must be \(2, 10\)"):
        sym.infer_shape(logits=(2, 10, 3), labels=(2, 11))
    with pytest.raises(mx.base.MXNetError, match="logits must be float32 or float64, got float16"):
        sym.infer_type(logits=np.float16, labels=np.float16)


# ---------------------------------------------------------------- errors
def test_bad_labels_and_arguments_raise_clear_errors():
    x = mx.nd.zeros((1, 2, 3))
    with pytest.raises(mx.base.MXNetError, match=r"a class in 1\.\.3 .* got 4"):
        sigmoid_focal_loss(x, mx.nd.array([[0, 4]])).asnumpy()
    with pytest.raises(mx.base.MXNetError, match="a class in 1..3"):
        sigmoid_focal_loss(x, mx.nd.array([[0, np.nan]])).asnumpy()
    with pytest.raises(ValueError, match=r"labels must be \(1, 2\)"):
        sigmoid_focal_loss(x, mx.nd.zeros((1, 3)))
    with pytest.raises(TypeError, match="labels must have the dtype of logits"):
        sigmoid_focal_loss(x, mx.nd.zeros((1, 2), dtype=np.float64))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        sigmoid_focal_loss(x, mx.nd.zeros((1, 2)), alpha=1.5)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        sigmoid_focal_loss(x, mx.nd.zeros((1, 2)), gamma=-1)
    with pytest.raises(TypeError, match="must both be mx.sym.Symbol or both mx.nd.NDArray"):
        sigmoid_focal_loss(x, mx.sym.Variable("labels"))


# ---------------------------------------------------------------- GPU
@pytest.mark.skipif(mx.context.num_gpus() == 0, reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_matches_cpu(dtype):
    rng = np.random.default_rng(7)
    logits, labels = random_case(rng, anchors=3000, classes=80)
    logits[0, :5] = [[-60.0] * 80, [60.0] * 80, [0.0] * 80, [1e-4] * 80, [-1e-4] * 80]
    results = []
    for ctx in (mx.cpu(), mx.gpu(0)):
        x = mx.nd.array(logits, ctx=ctx, dtype=dtype)
        y = mx.nd.array(labels, ctx=ctx, dtype=dtype)
        x.attach_grad()
        with mx.autograd.record():
            loss = sigmoid_focal_loss(x, y)
        loss.backward(mx.nd.array([2.0], ctx=ctx, dtype=dtype))
        results.append((loss.asnumpy(), x.grad.asnumpy()))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=rtol)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=10 * rtol, atol=1e-30)
    # A label above C cannot raise on the device: the loss is NaN instead.
    bad = mx.nd.array(np.where(labels == 1, 81, labels), ctx=mx.gpu(0))
    assert np.isnan(sigmoid_focal_loss(mx.nd.array(logits, ctx=mx.gpu(0)), bad).asnumpy()).all()
