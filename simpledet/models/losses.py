"""Detection losses as symbol builders, float32, each returning a scalar (1,) Symbol.

Ignored entries (label -1) contribute nothing. Every loss is divided by a count the caller
passes (the sampled anchors or RoIs of the batch on this device), which is wrapped in BlockGrad:
it is a normalizer, not something to differentiate.
"""
import mxnet as mx

__all__ = ["foreground_count", "normalize", "sampled_count", "sigmoid_bce_sum", "smooth_l1_sum",
           "softmax_ce_sum"]


def _valid_mask(labels, name):
    """1.0 where label >= 0, else 0.0; gradient-free."""
    valid = mx.sym.broadcast_greater_equal(labels, mx.sym.zeros((1,), name=f"{name}_zero"),
                                           name=f"{name}_valid")
    return mx.sym.BlockGrad(valid, name=f"{name}_mask")


def sampled_count(labels, name):
    """Number of entries with label >= 0, at least 1 (so an all-ignored batch gives 0 loss).

    Args:
        labels: Symbol of any shape; -1 marks ignored entries.
        name: op name prefix.

    Returns:
        (1,) Symbol, gradient-free.
    """
    count = mx.sym.sum(_valid_mask(labels, name), name=f"{name}_sum")
    return mx.sym.broadcast_maximum(count, mx.sym.ones((1,), name=f"{name}_one"),
                                    name=f"{name}_at_least_one")


def foreground_count(labels, name):
    """Number of entries with a foreground label (>= 1), at least 1: RetinaNet's normalizer
    (the count ``simpledet.ops.sigmoid_focal_loss`` divides by).

    Args:
        labels: Symbol of any shape; 0 background, -1 ignored, 1..C foreground.
        name: op name prefix.

    Returns:
        (1,) Symbol, gradient-free.
    """
    one = mx.sym.ones((1,), name=f"{name}_one")
    foreground = mx.sym.BlockGrad(mx.sym.broadcast_greater_equal(labels, one,
                                                                 name=f"{name}_fg"),
                                  name=f"{name}_mask")
    count = mx.sym.sum(foreground, name=f"{name}_sum")
    return mx.sym.broadcast_maximum(count, one, name=f"{name}_at_least_one")


def normalize(total, count, name):
    """``total / count`` for (1,) Symbols."""
    return mx.sym.broadcast_div(total, count, name=name)


def sigmoid_bce_sum(logits, labels, name):
    """Summed binary cross-entropy of sigmoid(logits) against labels in {1, 0, -1 (ignored)}.

    Computed as softplus(x) - x * z with MXNet's softrelu (log1p(exp(x)), linear above 20),
    whose gradient sigmoid(x) - z is exact everywhere (a max(x, 0) + log1p(exp(-|x|)) form gets
    the subgradients of relu and abs at x = 0 wrong: -1 instead of -0.5 for z = 1).

    Args:
        logits: (B, N) Symbol.
        labels: (B, N) Symbol with values 1, 0 or -1.
        name: op name prefix.

    Returns:
        (1,) Symbol.
    """
    mask = _valid_mask(labels, name)
    target = mx.sym.BlockGrad(mx.sym.relu(labels, name=f"{name}_target_relu"),
                              name=f"{name}_target")  # -1 -> 0; masked anyway
    softplus = mx.sym.Activation(logits, act_type="softrelu", name=f"{name}_softplus")
    per_entry = mx.sym.elemwise_sub(softplus, mx.sym.elemwise_mul(logits, target,
                                                                  name=f"{name}_xz"),
                                    name=f"{name}_per_entry")
    return mx.sym.sum(mx.sym.elemwise_mul(per_entry, mask, name=f"{name}_masked"),
                      name=f"{name}_sum")


def softmax_ce_sum(logits, labels, name):
    """Summed softmax cross-entropy over rows; rows with label -1 are ignored.

    Args:
        logits: (R, K) Symbol.
        labels: (R,) Symbol, class index 0..K-1 or -1.
        name: op name prefix.

    Returns:
        (1,) Symbol.
    """
    mask = _valid_mask(labels, name)
    index = mx.sym.BlockGrad(mx.sym.relu(labels, name=f"{name}_index_relu"),
                             name=f"{name}_index")
    log_prob = mx.sym.log_softmax(logits, axis=-1, name=f"{name}_log_softmax")
    picked = mx.sym.pick(log_prob, index, axis=-1, name=f"{name}_pick")
    return mx.sym.negative(mx.sym.sum(mx.sym.elemwise_mul(picked, mask, name=f"{name}_masked"),
                                      name=f"{name}_sum"), name=f"{name}_negative")


def smooth_l1_sum(pred, target, weight, beta, name):
    """Summed weighted smooth L1: 0.5 d^2 / beta for |d| < beta, else |d| - 0.5 beta.

    Args:
        pred, target, weight: Symbols of one shape; weight zeroes the unsampled entries.
        beta: the transition point (1/9 for SimpleDet's RPN, 1 for its box head); 0 is L1.
        name: op name prefix.

    Returns:
        (1,) Symbol.
    """
    diff = mx.sym.elemwise_sub(pred, target, name=f"{name}_diff")
    if beta > 0:
        # mx.sym.smooth_l1 with scalar sigma has its transition at 1 / sigma^2.
        loss = mx.sym.smooth_l1(diff, scalar=float(beta) ** -0.5, name=f"{name}_smooth_l1")
    else:
        loss = mx.sym.abs(diff, name=f"{name}_l1")
    weighted = mx.sym.elemwise_mul(loss, mx.sym.BlockGrad(weight, name=f"{name}_weight"),
                                   name=f"{name}_weighted")
    return mx.sym.sum(weighted, name=f"{name}_sum")
