"""RegionBLIP configuration: one dataclass holding every size, and named presets.

The three transformers sub-models (vision encoder, Q-Former, OPT) keep their own config kwargs as dicts, exactly as
`Blip2Config` does, so a BLIP-2 checkpoint's config round-trips without loss. Everything RegionBLIP adds (Point-BERT,
PaFE, LoRA, losses, generation) is a flat field.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

from contract.boxes import BOX_CORNER_CONVENTION, CornerConventionError, corner_convention_problem



@dataclass
class RegionBLIPConfig:
    vision: dict = field(default_factory=dict)  # Blip2VisionConfig kwargs
    qformer: dict = field(default_factory=dict)  # Blip2QFormerConfig kwargs; encoder_hidden_size = vision width
    text: dict = field(default_factory=dict)  # OPTConfig kwargs
    num_query_tokens: int = 32
    # Point-BERT (ULIP's copy): FPS + kNN grouping, mini-PointNet, transformer
    point_num_group: int = 512
    point_group_size: int = 32
    point_pointnet_width: int = 256  # mini-PointNet: 3 -> w/2 -> w, concat global -> 2w -> 2w -> w
    point_trans_dim: int = 384
    point_depth: int = 12
    point_heads: int = 6
    # PaFE box MLP: box -> hidden -> Q-Former width
    region_embed_hidden: int = 128
    # Point-BERT -> Q-Former adapter init: None is PyTorch's Linear default (as released). The default small model
    # sets 0.25, so that its point Q-Former's outputs vary between clouds from the start (docs/experiments.md).
    point_adapter_init_std: float | None = None
    # PaFE also marks the ViT tokens inside an image region with a learned vector (training/pafe.py). False is the
    # released code (box embedding on the queries only); the default small model sets True.
    region_feature_mask: bool = False
    # Point regions: the K scene points nearest the box, re-encoded by Point-BERT as the region's own cloud and
    # appended to the scene's tokens (training/pafe.py). 0 is the released code; the default small model sets 256.
    point_region_crop: int = 0
    # LoRA, as released: scaling alpha / r = 0.125
    lora_r: int = 8
    lora_alpha: int = 1
    lora_dropout: float = 0.0
    box_loss_weight: float = 1.0
    # The Q-Former's text side (training/qformer_text.py): BERT's text embeddings, text FFN and LM head in each
    # Q-Former, ITC projections and temperature, for the released ITC and ITG losses (a stage turns them on). False:
    # none of it exists, so checkpoints without it load unchanged.
    qformer_text: bool = False
    qformer_embed_dim: int = 256  # ITC feature width (the release's embed_dim)
    qformer_text_vocab_size: int = 30523  # bert-base-uncased's 30 522 + [DEC], as the release resizes it
    qformer_text_bos_token_id: int = 30522  # [DEC], the first token of ITG's decoder input
    # Points fed to Point-BERT per cloud, in training and at inference (the released recipe: 8192 per
    # Objaverse object, 40 000 per ScanNet scene).
    object_num_points: int = 8192
    scene_num_points: int = 40000
    newline_token_id: int = 50118  # OPT's "\n": captions end with it and generation stops at it
    # The order in which point-region boxes reach the position embedding (contract/boxes.py); a config.json without
    # it was written under the legacy order and is refused.
    box_corner_convention: str | None = BOX_CORNER_CONVENTION

    def __post_init__(self):
        problem = corner_convention_problem(self.box_corner_convention, "this RegionBLIP config")
        if problem:
            raise CornerConventionError(problem)
        self.qformer.setdefault("encoder_hidden_size", self.vision_config().hidden_size)
        encoder_width = self.qformer_config().encoder_hidden_size
        if encoder_width != self.vision_config().hidden_size:
            raise ValueError(
                f"qformer encoder_hidden_size is {encoder_width} but the vision width is "
                f"{self.vision_config().hidden_size}: the Q-Former cross-attends the ViT features, make them equal"
            )
        if self.point_region_crop and not (max(self.point_num_group, self.point_group_size) <= self.point_region_crop
                                           <= self.scene_num_points):
            raise ValueError(
                f"point_region_crop is {self.point_region_crop}: a crop needs at least point_num_group "
                f"({self.point_num_group}) and point_group_size ({self.point_group_size}) points and at most "
                f"scene_num_points ({self.scene_num_points}); set it in that range, or 0 for no crop"
            )

    def vision_config(self) -> Blip2VisionConfig:
        return Blip2VisionConfig(**self.vision)

    def qformer_config(self) -> Blip2QFormerConfig:
        config = Blip2QFormerConfig(**self.qformer)
        config.use_qformer_text_input = config.use_qformer_text_input or self.qformer_text  # the text FFN
        return config

    def text_config(self) -> OPTConfig:
        return OPTConfig(**self.text)

    @property
    def image_size(self) -> int:
        return self.vision_config().image_size

    @property
    def patch_grid(self) -> int:
        """ViT patches per image side."""
        return self.image_size // self.vision_config().patch_size

    @classmethod
    def preset(cls, name: str) -> "RegionBLIPConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
        return PRESETS[name]()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RegionBLIPConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {"box_corner_convention": None, **values}  # not recorded: written under the legacy corner order
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}: it was written by another version of RegionBLIP")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RegionBLIPConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except CornerConventionError as error:  # name the file the config came from
            raise CornerConventionError(f"{path}: {error}") from None


# Blip2VisionConfig's initializer_range (1e-10) assumes pretrained weights: a ViT trained from scratch
# from it never leaves zero, so the small presets use the usual 0.02.
def _tiny() -> RegionBLIPConfig:
    return RegionBLIPConfig(
        vision=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2, initializer_range=0.02),
        qformer=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     encoder_hidden_size=32),
        text=dict(vocab_size=128, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=128),
        num_query_tokens=8,
        point_num_group=16, point_group_size=8, point_pointnet_width=32,
        point_trans_dim=32, point_depth=2, point_heads=2,
        region_embed_hidden=16,
        newline_token_id=10,
    )


def _bench() -> RegionBLIPConfig:
    return RegionBLIPConfig(
        vision=dict(image_size=224, patch_size=14, hidden_size=384, intermediate_size=1536,
                    num_hidden_layers=4, num_attention_heads=6, initializer_range=0.02),
        qformer=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                     encoder_hidden_size=384),
        text=dict(vocab_size=50272, hidden_size=512, word_embed_proj_dim=512, ffn_dim=2048, num_hidden_layers=3,
                  num_attention_heads=8, max_position_embeddings=512),
        point_num_group=128, point_group_size=32, point_pointnet_width=128,
        point_trans_dim=192, point_depth=4, point_heads=3,
    )


def _bench_opt_125m() -> RegionBLIPConfig:
    # The bench preset's ViT, Q-Former and Point-BERT with facebook/opt-125m's language model sizes, where the
    # vocabulary projection is about a third of what a decode step reads (bench's 3-layer LLM: over three quarters).
    return dataclasses.replace(_bench(), text=dict(
        vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=2048))


def _blip2_opt_2_7b() -> RegionBLIPConfig:
    # Salesforce/blip2-opt-2.7b: EVA ViT-g/14 at 224 px, bert-base Q-Former, OPT-2.7B.
    return RegionBLIPConfig(
        vision=dict(image_size=224, patch_size=14, hidden_size=1408, intermediate_size=6144,
                    num_hidden_layers=39, num_attention_heads=16),
        qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     encoder_hidden_size=1408),
        text=dict(vocab_size=50272, hidden_size=2560, word_embed_proj_dim=2560, ffn_dim=10240,
                  num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048),
    )


PRESETS = {"tiny": _tiny, "bench": _bench, "bench-opt-125m": _bench_opt_125m, "blip2-opt-2.7b": _blip2_opt_2_7b}
