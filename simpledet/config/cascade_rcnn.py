"""The Cascade R-CNN config schema: Faster R-CNN's sections (simpledet.config.faster_rcnn) plus
``cascade``, the R-CNN stages that follow the RPN, each with its own box head.

Defaults are SimpleDet's ``cascade_r50v1_fpn_1x`` (Cai and Vasconcelos, 2018): three stages
trained at IoU 0.5 / 0.6 / 0.7 with regression stds (0.1, 0.1, 0.2, 0.2) / (0.05, 0.05, 0.1,
0.1) / (0.033, 0.033, 0.067, 0.067) and loss weights 1 / 0.5 / 0.25, class-agnostic box
regression; each later stage samples ``roi_sampler.batch_per_image`` RoIs from the previous
stage's refined boxes and the gt (SimpleDet, mmdetection). Stage 1 is Faster R-CNN's box head
and sampler, so its IoU and stds are ``roi_sampler.fg_iou`` and ``bbox_head.reg_std`` too:
the config refuses them disagreeing with ``cascade``'s first entries.

Layouts (``neck.type``, simpledet.config.faster_rcnn.LAYOUTS): 'fpn' (``cascade_*_fpn_1x``) and
'c5_reduce' (``cascade_r50v2_c5_red_1x``: RPN on c4, every stage's 2MLP head on the reduced
dilated c5). Not the C4 layout: its 'c5' box head runs res5 per RoI, once per stage.
"""
from simpledet.config.faster_rcnn import FasterRcnnConfig
from simpledet.config.schema import Check, ConfigError, Section, all_positive, field
from simpledet.detectors.cascade_rcnn import CascadeRcnn

__all__ = ["CASCADE_LAYOUTS", "CascadeConfig", "CascadeRcnnConfig"]

# neck.type values whose box heads a cascade can repeat per stage (2MLP or 4conv1fc heads).
CASCADE_LAYOUTS = ("fpn", "c5_reduce")


_STAGE_IOUS = Check(lambda v: len(v) >= 2 and all(0.0 <= x <= 1.0 for x in v),
                    "must hold one IoU in [0, 1] per stage, at least 2 stages")
_STDS = Check(lambda v: len(v) > 0 and all(x > 0 for std in v for x in std),
              "must hold 4 positive stds per stage")


class CascadeConfig(Section):
    """The R-CNN stages (one entry per stage in each tuple; stage 1 reads the RPN's proposals).

    Attributes:
        fg_iou: the IoU at which a stage's sampler calls a RoI foreground (and below which it
            is background, from roi_sampler.bg_iou_lo): its quality threshold.
        reg_std: the normalization of each stage's regression targets, and of the deltas it
            decodes into the next stage's RoIs (means: bbox_head.reg_mean).
        loss_weight: multiplies each stage's two losses (the logged values are weighted).
        resample: stages after the first sample roi_sampler.batch_per_image RoIs (at most
            fg_fraction of them foreground) from the previous stage's refined boxes and, with
            roi_sampler.add_gt_as_proposals, the gt boxes (SimpleDet, mmdetection); False keeps
            every refined box (and gt box), only relabelled (detectron2), so each later stage
            sees G more rows per image.
    """

    fg_iou: tuple[float, ...] = field((0.5, 0.6, 0.7), check=_STAGE_IOUS)
    reg_std: tuple[tuple[float, float, float, float], ...] = field(
        ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)),
        check=_STDS)
    loss_weight: tuple[float, ...] = field((1.0, 0.5, 0.25), check=all_positive)
    resample: bool = True

    @property
    def num_stages(self) -> int:
        """Number of R-CNN stages: len(fg_iou)."""
        return len(self.fg_iou)

    def validate(self):
        for name in ("reg_std", "loss_weight"):
            if len(getattr(self, name)) != len(self.fg_iou):
                raise self.error(name, f"has {len(getattr(self, name))} entries but "
                                 f"cascade.fg_iou has {len(self.fg_iou)}: one per stage")


class CascadeRcnnConfig(FasterRcnnConfig):
    """A complete Cascade R-CNN experiment: Faster R-CNN's fields plus ``cascade`` (the stages).

    The box head (``bbox_head``: type, fc_dim, reg_mean) is the design of every stage's head;
    the stages differ in their parameters, IoU, stds and loss weight. Layouts 'fpn' and
    'c5_reduce' (see :data:`CASCADE_LAYOUTS`).
    """

    detector_class = CascadeRcnn
    precision_components = CascadeRcnn.precision_components

    cascade: CascadeConfig

    def validate(self):
        cascade, sampler, head = self.cascade, self.roi_sampler, self.bbox_head
        if self.neck.type not in CASCADE_LAYOUTS:
            raise ConfigError(f"'neck.type' is {self.neck.type!r} but Cascade R-CNN runs on the "
                              f"FPN or C5-reduce layout only", key="neck.type",
                              suggestion="use 'fpn' or 'c5_reduce'")
        if not head.class_agnostic:
            raise ConfigError("'bbox_head.class_agnostic' is False but the cascade refines one "
                              "box per RoI", key="bbox_head.class_agnostic",
                              suggestion="set it to True")
        if (sampler.fg_iou, sampler.bg_iou_hi) != (cascade.fg_iou[0],) * 2:
            raise ConfigError(
                f"'roi_sampler.fg_iou' / 'roi_sampler.bg_iou_hi' are {sampler.fg_iou} / "
                f"{sampler.bg_iou_hi} but stage 1's IoU cascade.fg_iou[0] is "
                f"{cascade.fg_iou[0]}", key="roi_sampler.fg_iou",
                suggestion="set all three to the same value")
        if tuple(head.reg_std) != tuple(cascade.reg_std[0]):
            raise ConfigError(
                f"'bbox_head.reg_std' is {head.reg_std} but stage 1's cascade.reg_std[0] is "
                f"{cascade.reg_std[0]}", key="bbox_head.reg_std",
                suggestion="set both to the same value")
        super().validate()
