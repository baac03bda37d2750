"""The deliberate breaks scripts/check_tests.py applies, one at a time, to a copy of the repository.

Each entry breaks one claim the code makes and names the test files (or test node ids) that must
then fail. ``old`` must occur exactly once in ``file``: when the code it quotes changes, the
check reports the entry as stale instead of silently testing nothing; update the entry then.
Keep the test lists short (the whole check should run in a few minutes on 2 cores).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    """One deliberate break.

    Attributes:
        name: short identifier (``check_tests.py --only NAME``).
        claim: what the break violates, in words.
        file: path relative to the repository root.
        old: exact text in ``file`` (once).
        new: what replaces it.
        tests: pytest arguments (files or node ids) that must fail under the break.
    """

    name: str
    claim: str
    file: str
    old: str
    new: str
    tests: tuple


MUTATIONS = (
    Mutation(
        name="reseed",
        claim="mx.random is reseeded from (seed, iteration) every iteration, so a resumed run "
              "samples RoIs as a straight one",
        file="simpledet/engine/trainer.py",
        old="mx.random.seed(step_seed(self.seed, iteration))",
        new='mx.random.seed(int.from_bytes(__import__("os").urandom(4), "little"))',
        tests=("tests/engine/test_real_resume.py",)),
    Mutation(
        name="rescale_grad",
        claim="rescale_grad = 1 / (contexts * machines): N workers step like one machine with "
              "the same total batch",
        file="simpledet/engine/trainer.py",
        old="workers = len(self.contexts) * self.num_machines",
        new="workers = len(self.contexts)",
        tests=("tests/engine/test_distributed_equivalence.py::"
               "test_two_workers_train_like_one_process_with_two_contexts",)),
    Mutation(
        name="anchor_offset",
        claim="an anchor is centred on the centre of its stride cell, (stride - 1) / 2 under "
              "the +1 convention",
        file="simpledet/core/anchors.py",
        old="ctr = 0.5 * (stride - 1.0)",
        new="ctr = 0.5 * stride",
        tests=("tests/core/test_anchors.py",)),
    Mutation(
        name="iou_plus_one",
        claim="IoU counts pixels: the intersection width is x2 - x1 + 1",
        file="simpledet/core/boxes.py",
        old="iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], "
            "b[None, :, 0]) + 1",
        new="iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], "
            "b[None, :, 0])",
        tests=("tests/core/test_boxes.py",)),
    Mutation(
        name="rle_column_major",
        claim="COCO RLE runs are column-major (the photos fixture writes its crowd region so)",
        file="simpledet/data/photos.py",
        old='flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")',
        new='flat = np.asarray(mask, dtype=np.uint8).ravel(order="C")',
        tests=("tests/data/test_photos.py",)),
    Mutation(
        name="rle_flip_axis",
        claim="flipping an RLE segmentation mirrors its columns (left-right), not its rows",
        file="simpledet/data/transforms.py",
        old="mask = mask_utils.decode(rle)[:, ::-1]",
        new="mask = mask_utils.decode(rle)[::-1, :]",
        tests=("tests/data/test_transforms.py",)),
    Mutation(
        name="scale_inverse",
        claim="unscale_boxes inverts scale_boxes exactly: x2 -> (x2 + 1) / s - 1",
        file="simpledet/data/transforms.py",
        old="out[:, 2:] += np.float32(1) / scale - np.float32(1)",
        new="pass",
        tests=("tests/data/test_transforms.py",)),
    Mutation(
        name="add_gt_as_proposals",
        claim="roi_sampler.add_gt_as_proposals=False keeps the gt boxes out of the RoI "
              "sampler's candidates",
        file="simpledet/models/rpn/rpn_head.py",
        old="add_gt=sampler.add_gt_as_proposals,",
        new="add_gt=True,",
        tests=("tests/detectors/test_faster_rcnn.py::"
               "test_add_gt_as_proposals_false_changes_the_sampled_rows",)),
    Mutation(
        name="proposal_target_add_gt_attr",
        claim="proposal_target passes add_gt to the op (False: only the rois are candidates)",
        file="simpledet/ops/proposal_target.py",
        old='"add_gt": str(add_gt),',
        new='"add_gt": "True",',
        tests=("tests/ops/test_proposal_target.py",)),
    Mutation(
        name="crowd_thresh_attr",
        claim="proposal_target passes crowd_thresh to the op: a would-be background RoI that a "
              "crowd region covers more than roi_sampler.crowd_iof of is no background row",
        file="simpledet/ops/proposal_target.py",
        old='attrs.update(has_crowd="True", crowd_thresh=repr(crowd_thresh))',
        new='attrs.update(has_crowd="True", crowd_thresh="1.0")',
        tests=("tests/ops/test_proposal_target.py::test_crowd_hand_computed_sampled",
               "tests/data/test_crowd_ignore.py::"
               "test_photos_crowd_region_is_ignored_by_the_roi_sampler_while_training")),
    Mutation(
        name="crowd_rows_keep_largest",
        claim="an image with more crowd regions than input.max_num_crowd keeps the largest",
        file="simpledet/data/targets/crowd.py",
        old="largest = np.argsort(-area, kind=\"stable\")[:self.max_crowd]",
        new="largest = np.arange(len(crowd))[:self.max_crowd]",
        tests=("tests/data/test_crowd_ignore.py::"
               "test_crowd_rows_beyond_max_crowd_keep_the_largest_and_are_counted",)),
    Mutation(
        name="pretrain_strict",
        claim="a pretrained file missing backbone parameters is an error naming them",
        file="simpledet/engine/pretrained.py",
        old="if strict and report.missing:",
        new="if False and report.missing:",
        tests=("tests/engine/test_pretrained.py",)),
    Mutation(
        name="ssh_tty",
        claim="remote nodes run under ssh -tt, so they die when the connection drops",
        file="simpledet/engine/launcher.py",
        old='SSH_OPTIONS = ("-tt", "-o", "BatchMode=yes")',
        new='SSH_OPTIONS = ("-o", "BatchMode=yes")',
        tests=("tests/engine/test_launcher.py::test_ssh_argv_is_exactly_this_command_line",)),
    Mutation(
        name="launcher_sighup",
        claim="SIGHUP to the launcher stops every process it started",
        file="simpledet/engine/launcher.py",
        old="handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)",
        new="handled = (signal.SIGINT, signal.SIGTERM)",
        tests=("tests/engine/test_launcher.py",)),
    Mutation(
        name="launcher_sigkill",
        claim="a process ignoring SIGTERM gets SIGKILL once the grace period is over",
        file="simpledet/engine/launcher.py",
        old="_signal_group(pgid, signal.SIGKILL)",
        new="pass",
        tests=("tests/engine/test_launcher.py",)),
    Mutation(
        name="launcher_pdeathsig",
        claim="the launcher's children die with it, even when it is killed by SIGKILL",
        file="simpledet/engine/launcher.py",
        old="prctl(1, signal.SIGTERM)",
        new="prctl(1, 0)",
        tests=("tests/engine/test_launcher.py",)),
    Mutation(
        name="paste_half_pixel",
        claim="paste_masks samples the RoI-frame mask at image pixel centres in the frame the "
              "MaskTarget op uses (cell c centred at x1 + (c + 0.5) * w / M)",
        file="simpledet/core/masks.py",
        old="s = np.clip((pix - start) * cells / extent - 0.5, 0.0, cells - 1.0)",
        new="s = np.clip((pix - start) * cells / extent, 0.0, cells - 1.0)",
        tests=("tests/core/test_masks.py",)),
    Mutation(
        name="thin_smallest_step",
        claim="encode_polygons thins an oversized gt with the smallest step that fits",
        file="simpledet/core/masks.py",
        old="step = int(steps[fits[0]])",
        new="step = int(steps[fits[-1]])",
        tests=("tests/core/test_masks.py",)),
    Mutation(
        name="cascade_stage_iou",
        claim="each Cascade R-CNN stage samples at its own IoU (a RoI at IoU 0.65 is foreground "
              "for stages 1-2, background for stage 3)",
        file="simpledet/detectors/cascade_rcnn.py",
        old="fg_thresh=iou, bg_thresh_hi=iou,",
        new="fg_thresh=sampler.fg_iou, bg_thresh_hi=sampler.bg_iou_hi,",
        tests=("tests/detectors/test_cascade_rcnn.py::"
               "test_stage_samplers_use_their_iou_and_stds",)),
    Mutation(
        name="cascade_score_average",
        claim="the Cascade R-CNN test scores are the mean of every stage's head on the stage-3 "
              "RoIs, not the last head's alone",
        file="simpledet/detectors/cascade_rcnn.py",
        old="dets = self.bbox_heads[-1].postprocess(cls_prob,",
        new="dets = self.bbox_heads[-1].postprocess(probs[-1],",
        tests=("tests/detectors/test_cascade_rcnn.py::"
               "test_test_graph_averages_every_head_on_the_last_stage_rois",)),
    Mutation(
        name="box_decode_stds",
        claim="box_decode de-normalizes the deltas with the stds it is given (each cascade "
              "stage its own)",
        file="simpledet/ops/box_decode.py",
        old="kwargs = dict(bbox_means=str(means), bbox_stds=str(stds))",
        new="kwargs = dict(bbox_means=str(means), bbox_stds=str((0.1, 0.1, 0.2, 0.2)))",
        tests=("tests/ops/test_box_decode.py",)),
    Mutation(
        name="retina_logit_layout",
        claim="RetinaNet's loss reads class channel a * C + c as anchor a, class c + 1 (the "
              "layout of retina_label and of the post-processing op)",
        file="simpledet/models/dense_heads/retina_head.py",
        old="split = mx.sym.reshape(logit, shape=(0, num_a, num_c, -1),",
        new="split = mx.sym.reshape(logit, shape=(0, num_c, num_a, -1),",
        tests=("tests/detectors/test_retinanet.py::"
               "test_loss_layout_of_the_logits_and_deltas_is_the_loaders",)),
    Mutation(
        name="retina_class_labels",
        claim="a foreground RetinaNet anchor is labelled with its matched gt's class",
        file="simpledet/data/targets/retina.py",
        old='out["labels"][positive] = classes[matched[positive]]',
        new='out["labels"][positive] = classes.min()',
        tests=("tests/data/test_retina_targets.py",)),
    Mutation(
        name="draw_upscale",
        claim="small images are drawn upscaled to 640 pixels on the long side",
        file="simpledet/utils/draw.py",
        old="return max(1.0, float(min_long_side) / max(int(height), int(width), 1))",
        new="return 1.0",
        tests=("tests/utils/test_draw.py",)),
    Mutation(
        name="draw_label_inside",
        claim="a label is shifted into the picture when its box touches the right edge",
        file="simpledet/utils/draw.py",
        old="left = min(max(x1, 0), canvas_w - label_w)",
        new="left = x1",
        tests=("tests/utils/test_draw.py",)),
    Mutation(
        name="draw_label_spots",
        claim="a label that would cover an earlier one moves inside or below its box",
        file="simpledet/utils/draw.py",
        old="for top in (y1 - label_h, y1, y2 + 1):",
        new="for top in (y1 - label_h,):",
        tests=("tests/utils/test_draw.py",)),
    Mutation(
        name="demo_resize",
        claim="the demo resizes an image as the test loader does (short side to input.short)",
        file="simpledet/engine/inference.py",
        old="resized, im_info = resize_image(image_rgb, cfg.input.short, cfg.input.long)",
        new="resized, im_info = resize_image(image_rgb, cfg.input.short - 8, cfg.input.long)",
        tests=("tests/engine/test_inference.py",)),
    Mutation(
        name="onnx_nms_plus_one",
        claim="the ONNX lowerings give NonMaxSuppression [x1, y1, x2 + 1, y2 + 1] so that its "
              "IoU is the ops' \"+1\" IoU",
        file="simpledet/export/onnx_ops.py",
        old='self.op("Add", [x2, one]), self.op("Add", [y2, one])',
        new="x2, y2",
        tests=("tests/export/test_onnx_export.py::test_pyramid_proposal_lowering_equals_the_op",)),
    Mutation(
        name="onnx_fpn_level",
        claim="the ONNX FPNROIAlign lowering pools each roi from the op's level "
              "floor(k0 + log2(sqrt(area) / s0))",
        file="simpledet/export/onnx_ops.py",
        old="2.0 ** (level_ids[0] + 1 + j - canonical_level)",
        new="2.0 ** (level_ids[0] + j - canonical_level)",
        tests=("tests/export/test_onnx_export.py::"
               "test_fpn_roi_align_lowering_matches_the_op",)),
    Mutation(
        name="onnx_detection_classes",
        claim="the ONNX DetectionPostprocess lowering labels a detection with its class 1..C-1",
        file="simpledet/export/onnx_ops.py",
        old='label = g.op("Add", [g.op("Mod", [job, num_fg]), g.const([1])])',
        new='label = g.op("Add", [g.op("Mod", [job, num_fg]), g.const([0])])',
        tests=("tests/export/test_onnx_export.py::"
               "test_detection_postprocess_lowering_matches_the_op",)),
    Mutation(
        name="import_bias_fold",
        claim="a source conv's bias is folded into the next BatchNorm's moving mean when "
              "weights are imported (GluonCV resnet*_v1)",
        file="simpledet/engine/weight_maps.py",
        old='out[f"{norm}_moving_mean"] = out[f"{norm}_moving_mean"] - bias',
        new='out[f"{norm}_moving_mean"] = out[f"{norm}_moving_mean"]',
        tests=("tests/engine/test_weight_import.py::"
               "test_gluoncv_resnet50_v1_folds_conv_biases",)),
    Mutation(
        name="import_msra_branches",
        claim="the MSRA map sends branch2a/2b/2c to conv1/conv2/conv3 of a unit",
        file="simpledet/engine/weight_maps.py",
        old='"conv2": "res{b}_branch2b", "bn2": "bn{b}_branch2b",',
        new='"conv2": "res{b}_branch2b", "bn2": "bn{b}_branch2c",',
        tests=("tests/engine/test_weight_import.py::test_msra_resnet_v1_50_file_matches",)),
    Mutation(
        name="dcn_offset_pairs",
        claim="the stock-op DCNv2 reads offsets as (dy, dx) pairs per tap, as MXNet's op",
        file="simpledet/models/layers/dcn.py",
        old="dx = mx.sym.slice_axis(offset, axis=1, begin=at + 1, end=at + 2)",
        new="dx = mx.sym.slice_axis(offset, axis=1, begin=at, end=at + 1)",
        tests=("tests/models/test_dcn.py::"
               "test_sampler_dcnv2_equals_the_op_on_random_offsets_and_masks",)),
    Mutation(
        name="dcn_offsets_start_at_zero",
        claim="the offset (and mask) convs of DCN are zero-initialised, so a deformable conv "
              "starts as the plain conv",
        file="simpledet/models/layers/dcn.py",
        old='offset_weight = mx.sym.var(f"{name}_offset_weight", init=mx.init.Zero())',
        new='offset_weight = mx.sym.var(f"{name}_offset_weight", init=mx.init.Normal(0.01))',
        tests=("tests/models/test_dcn.py::test_detector_initializer_zeroes_the_offset_convs",)),
    Mutation(
        name="fpn_lateral_norm",
        claim="neck.normalizer normalizes the FPN's lateral convs too, not only the outputs",
        file="simpledet/models/neck/fpn.py",
        old='lateral = self._conv(features[f"c{level}"], f"p{level}_lateral", 1, norm=True)',
        new='lateral = self._conv(features[f"c{level}"], f"p{level}_lateral", 1, norm=False)',
        tests=("tests/models/test_normalizer.py::"
               "test_fpn_with_gn_normalizes_every_lateral_and_output_conv",)),
    Mutation(
        name="proposal_per_category",
        claim="proposal AR matches boxes of any category (COCOeval useCats = 0)",
        file="simpledet/engine/evaluation.py",
        old="evaluator.params.useCats = int(spec.use_cats)",
        new="evaluator.params.useCats = 1",
        tests=("tests/engine/test_proposal_eval.py",)),
    Mutation(
        name="proposal_padding",
        claim="the proposal op's padding rows (cyclic repeats) are no results",
        file="simpledet/detectors/rpn.py",
        old="count = proposal_count(rows)",
        new="count = len(rows)",
        tests=("tests/detectors/test_rpn.py",)),
    Mutation(
        name="faster_decodes_as_rpn",
        claim="Faster R-CNN extends the RPN-only detector but decodes its own dets (B, D, 6)",
        file="simpledet/detectors/faster_rcnn.py",
        old="        return decode_detections(outputs, im_info, image_sizes)",
        new="        return RpnDetector.decode_test_outputs(self, outputs, im_info, image_sizes)",
        tests=("tests/detectors/test_rpn.py",)),
)
