"""RegionBLIP: BLIP-2 (ViT -> Q-Former -> OPT) extended to image regions, point clouds and point-cloud regions.

Per modality: its own query tokens and LLM projection (ModuleDicts keyed by modality) and its own LoRA adapter in the
Q-Former and OPT (none for `image`, which is exactly BLIP-2). Region modalities add PaFE, a box MLP added to every
query, and a box-regression head. Point modalities encode with Point-BERT and use their own Q-Former copy. With
`qformer_text`, the Q-Formers also read text, for the released ITC and ITG losses (training/qformer_text.py).
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, Blip2QFormerModel, Blip2VisionModel

from . import checkpoint, checkpoint_lavis
from contract.generation import RELEASE_EVALUATION
from contract.modalities import ADAPTER_MODALITIES, BOX_DIMS, BY_NAME, MODALITIES, POINT_MODALITIES, REGION_MODALITIES

from .config import RegionBLIPConfig
from .generation import Generated, generate_from_prompt
from .lora import OPT_TARGETS, QFORMER_TARGETS, activate_adapter, add_adapters
from .modeling_inputs import (check_boxes, check_captions, check_frame_index, check_modality, check_pixel_values,
                              check_points)
from .pointbert import PointBERT
from .qformer_text import QFormerTextLosses
from .region_prompt import RegionPrompt

STAGES = ("vision", "blip2", "regionblip")


def qformer_name(modality: str) -> str:
    return "qformer_pc" if modality in POINT_MODALITIES else "qformer"


@dataclass
class RegionBLIPOutput:
    loss: torch.Tensor  # lm_loss + box_loss_weight * box_loss + itc_loss + itg_loss
    lm_loss: torch.Tensor | None  # None only for the trainer's ViT pre-training task, which has no LM
    box_loss: torch.Tensor | None  # region modalities only
    logits: torch.Tensor | None  # (B, Q + T, V); None as lm_loss
    itc_loss: torch.Tensor | None = None  # the Q-Former's query-text contrastive loss, when asked for
    itg_loss: torch.Tensor | None = None  # the Q-Former's own captioning loss, when asked for


class RegionBLIP(nn.Module):
    def __init__(self, config: RegionBLIPConfig):
        super().__init__()
        self.config = config
        qformer_config, width = config.qformer_config(), config.qformer_config().hidden_size
        llm_width = config.text_config().hidden_size
        self.vision_model = Blip2VisionModel(config.vision_config())
        self.qformer = Blip2QFormerModel(qformer_config)
        self.qformer_pc = Blip2QFormerModel(qformer_config)  # the point modalities' own Q-Former, as released
        self.point_encoder = PointBERT(config)
        self.point_adapter = nn.Linear(config.point_trans_dim, qformer_config.encoder_hidden_size)
        if config.point_adapter_init_std is not None:
            nn.init.normal_(self.point_adapter.weight, std=config.point_adapter_init_std)
        self.query_tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(1, config.num_query_tokens, width) * 0.02) for m in MODALITIES}
        )
        self.region_position_embedding = nn.ModuleDict({  # PaFE
            m: nn.Sequential(nn.Linear(BOX_DIMS[m], config.region_embed_hidden), nn.GELU(),
                             nn.Linear(config.region_embed_hidden, width))
            for m in REGION_MODALITIES
        })
        if config.region_feature_mask:  # PaFE on the image features too (training/pafe.py); zero: no effect at start
            self.region_feature_embedding = nn.Parameter(torch.zeros(qformer_config.encoder_hidden_size))
        self.box_regression = nn.ModuleDict({m: nn.Linear(width, BOX_DIMS[m]) for m in REGION_MODALITIES})
        self.language_projection = nn.ModuleDict({m: nn.Linear(width, llm_width) for m in MODALITIES})
        self.language_model = AutoModelForCausalLM.from_config(config.text_config())
        add_adapters(self.qformer, ["image_region"], QFORMER_TARGETS, config)
        add_adapters(self.qformer_pc, list(POINT_MODALITIES), QFORMER_TARGETS, config)
        add_adapters(self.language_model, list(ADAPTER_MODALITIES), OPT_TARGETS, config)
        if config.qformer_text:  # created last: a model without it draws its init exactly as before
            self.qformer_text = QFormerTextLosses(config)
        self.requires_grad_(True)  # peft's injection froze the wrapped models; what trains is freeze_for's decision
        self.stage: str | None = None

    # ---- per-call modality switch -------------------------------------------------------------------------------

    def qformer_for(self, modality: str) -> Blip2QFormerModel:
        return getattr(self, qformer_name(modality))

    def use_modality(self, modality: str) -> None:
        """Activate the modality's LoRA adapters; `image` runs the plain BLIP-2 weights."""
        check_modality(modality)
        adapter = BY_NAME[modality].adapter
        activate_adapter(self.qformer_for(modality), adapter)
        activate_adapter(self.language_model, adapter)

    # ---- features and soft prompt -------------------------------------------------------------------------------

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised images -> ViT features (B, 1 + P, W_enc); unchecked (see encode_frames)."""
        return self.vision_model(pixel_values=pixel_values).last_hidden_state

    def point_features(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) clouds -> Point-BERT tokens in the Q-Former's encoder width (B, 1 + G, W_enc); unchecked."""
        return self.point_adapter(self.point_encoder(points))

    def encode_frames(self, modality: str, pixel_values=None, points=None) -> torch.Tensor:
        """Per-frame features the Q-Former cross-attends, (B, L, encoder width); independent of any box."""
        if modality in POINT_MODALITIES:
            check_points(points, self.config)
            return self.point_features(points)
        check_pixel_values(pixel_values, self.config)
        return self.image_features(pixel_values)

    def soft_prompt(self, modality: str, features: torch.Tensor, boxes=None, frame_index=None, points=None):
        """Query outputs (R, Q, W) and their LLM projection (R, Q, D): one row per region, or per frame.
        `points` (F, N, 3): the scenes themselves, which point regions need with point_region_crop."""
        path, queries, qformer_features = self._prompt_path(modality, features, boxes, frame_index, points)
        return path.from_qformer_inputs(queries, qformer_features)

    def _prompt_path(self, modality: str, features, boxes, frame_index, points):
        """The modality's RegionPrompt and its Q-Former inputs: queries (R, Q, W), features (R, L', W_enc)."""
        if modality in REGION_MODALITIES:
            frame_index = check_frame_index(frame_index, features.shape[0], boxes.shape[0])
            if modality == "pointcloud_region" and self.config.point_region_crop and points is None:
                raise ValueError("point regions with point_region_crop need the scene points: pass points=")
        path = RegionPrompt(self, modality)
        return path, *path.qformer_inputs(features, boxes, frame_index, points)

    # ---- training -----------------------------------------------------------------------------------------------

    def forward(self, modality: str, input_ids, attention_mask, pixel_values=None, points=None, boxes=None,
                frame_index=None, *, qformer_input_ids=None, qformer_attention_mask=None, itc: bool = False,
                itg: bool = False) -> RegionBLIPOutput:
        """LM loss on the caption tokens (tokenizer output of caption + "\\n"), plus L1 box loss for regions, plus
        the Q-Former's ITC and ITG when asked, on qformer_input_ids: the captions in the Q-Former's tokens."""
        self.use_modality(modality)
        boxes = check_boxes(modality, boxes)
        features = self.encode_frames(modality, pixel_values, points)
        path, queries, qformer_features = self._prompt_path(modality, features, boxes, frame_index, points)
        query_output, prompt = path.from_qformer_inputs(queries, qformer_features)  # (B, Q, W), (B, Q, D)
        check_captions(input_ids, attention_mask, prompt.shape[0])
        # [soft prompt ; caption], labels -100 on the prompt and on padding
        text = self.language_model.get_input_embeddings()(input_ids)  # (B, T, D)
        prompt_mask = torch.ones(prompt.shape[:2], dtype=attention_mask.dtype, device=prompt.device)
        labels = torch.cat([torch.full_like(prompt_mask, -100, dtype=torch.long),
                            input_ids.masked_fill(attention_mask == 0, -100)], dim=1)  # (B, Q + T)
        out = self.language_model(inputs_embeds=torch.cat([prompt.to(text.dtype), text], dim=1),
                                  attention_mask=torch.cat([prompt_mask, attention_mask], dim=1), labels=labels)
        box_loss = None
        loss = out.loss
        if modality in REGION_MODALITIES:
            predicted = self.box_regression[modality](query_output.mean(dim=1))  # (B, 4 | 24)
            box_loss = F.l1_loss(predicted, boxes)
            loss = loss + self.config.box_loss_weight * box_loss
        itc_loss = itg_loss = None
        if itc or itg:
            self._check_qformer_captions(qformer_input_ids, qformer_attention_mask, prompt.shape[0])
            qformer, name, text = self.qformer_for(modality), qformer_name(modality), self.qformer_text
            if itc:
                itc_loss = text.itc(qformer, name, modality, query_output, qformer_input_ids, qformer_attention_mask)
                loss = loss + itc_loss
            if itg:
                itg_loss = text.itg(qformer, name, queries, qformer_features, qformer_input_ids,
                                    qformer_attention_mask)
                loss = loss + itg_loss
        return RegionBLIPOutput(loss=loss, lm_loss=out.loss, box_loss=box_loss, logits=out.logits, itc_loss=itc_loss,
                                itg_loss=itg_loss)

    def _check_qformer_captions(self, input_ids, attention_mask, num_prompts: int) -> None:
        if not self.config.qformer_text:
            raise ValueError("ITC and ITG need the Q-Former text side: build the model with qformer_text=True "
                             "(RegionBLIP.from_blip2(..., qformer_text=True, bert=<bert-base-uncased directory>))")
        if input_ids is None or attention_mask is None:
            raise ValueError("ITC and ITG read the captions in the Q-Former's tokens: pass qformer_input_ids and "
                             "qformer_attention_mask (training.tasks.model_inputs makes them)")
        check_captions(input_ids, attention_mask, num_prompts)
        if input_ids.max() >= self.config.qformer_text_vocab_size:
            raise ValueError(f"qformer_input_ids reach {int(input_ids.max())}, past qformer_text_vocab_size "
                             f"{self.config.qformer_text_vocab_size}: the Q-Former tokenizer does not fit the model")

    def trainable_parameters(self, stage: str) -> dict[str, nn.Parameter]:
        """`vision`: the ViT alone (pre-training it, training/vision_pretraining.py). `blip2`: the BLIP-2 image path
        except the frozen ViT. `regionblip`: the released recipe's set (non-image LoRA, region/point queries, PaFE,
        point Q-Former, point adapter, their projections, regression heads)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: expected one of {list(STAGES)}")
        if stage == "vision":
            return {n: p for n, p in self.named_parameters() if n.startswith("vision_model.")}
        # the ITC text projection and temperature, when the model has them, train in both stages (as released)
        if stage == "blip2":
            parts = ("qformer.", "language_projection.image.", "language_model.", "qformer_text.text_projection.",
                     "qformer_text.text.qformer.", "qformer_text.vision_projection.image.")
            return {n: p for n, p in self.named_parameters()
                    if (n in ("query_tokens.image", "qformer_text.temp") or n.startswith(parts)) and ".lora_" not in n}
        new_modalities = ADAPTER_MODALITIES
        # the image Q-Former's text side stays frozen with it (only its LoRA trains); the point Q-Former's trains
        parts = ("qformer_pc.", "point_adapter.", "region_position_embedding.", "box_regression.",
                 *(f"language_projection.{m}." for m in new_modalities), "qformer_text.text_projection.",
                 "qformer_text.text.qformer_pc.", *(f"qformer_text.vision_projection.{m}." for m in new_modalities))
        named = {f"query_tokens.{m}" for m in new_modalities} | {"region_feature_embedding", "qformer_text.temp"}
        return {n: p for n, p in self.named_parameters() if ".lora_" in n or n in named or n.startswith(parts)}

    def freeze_for(self, stage: str) -> dict[str, nn.Parameter]:
        """Make exactly the stage's trainable set require grad; returns it (for the optimizer)."""
        trainable = self.trainable_parameters(stage)
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name in trainable)
        self.stage = stage
        self.train(self.training)
        return trainable

    def train(self, mode: bool = True) -> "RegionBLIP":
        super().train(mode)
        # Frozen encoders never train: no dropout, and Point-BERT's BatchNorm statistics stay fixed.
        self.vision_model.train(mode and self.stage == "vision")
        self.point_encoder.eval()
        if self.stage == "regionblip":
            self.qformer.eval()  # the frozen image Q-Former runs without dropout, as released
        return self

    # ---- inference ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, modality: str, pixel_values=None, points=None, boxes=None, frame_index=None, *,
                 num_beams: int = RELEASE_EVALUATION.num_beams, max_new_tokens: int = RELEASE_EVALUATION.max_new_tokens,
                 min_new_tokens: int = RELEASE_EVALUATION.min_new_tokens, eos_token_id: int | None = None,
                 stop=None, input_ids=None, attention_mask=None) -> Generated:
        """Describe each image/scene, or each region: one frame + R boxes -> R outputs. The frame's ViT or Point-BERT
        features are computed once and shared by all of its regions. Decoding defaults to the release's evaluation.
        `input_ids` (R, T), `attention_mask` (R, T): the text after the soft prompt, BOS and a text prompt's tokens
        left-padded, as BLIP-2's generate takes them (default: BOS alone)."""
        self.use_modality(modality)
        boxes = check_boxes(modality, boxes)
        features = self.encode_frames(modality, pixel_values, points)
        _, prompt = self.soft_prompt(modality, features, boxes, frame_index, points)  # (R, Q, D)
        eos = self.config.newline_token_id if eos_token_id is None else eos_token_id
        return generate_from_prompt(self.language_model, prompt, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                    min_new_tokens=min_new_tokens, eos_token_id=eos, stop=stop, input_ids=input_ids,
                                    attention_mask=attention_mask)

    # ---- checkpoints --------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, tokenizer=None) -> None:
        checkpoint.save(self, self.config, directory, tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "RegionBLIP":
        model = cls(RegionBLIPConfig.load(Path(directory) / checkpoint.CONFIG_NAME))
        checkpoint.load_weights(model, Path(directory) / checkpoint.WEIGHTS_NAME)
        return model.eval()

    @classmethod
    def from_blip2(cls, directory: str | Path, *, bert: str | Path | None = None, **config_overrides) -> "RegionBLIP":
        """From a transformers Blip2ForConditionalGeneration directory (Salesforce/blip2-opt-2.7b format). The
        RegionBLIP parts start fresh, except the point Q-Former, which starts as a copy of the image Q-Former. With
        qformer_text=True, `bert` (a bert-base-uncased directory) gives both Q-Formers' text side, as released."""
        model = cls(checkpoint.blip2_config(directory, **config_overrides))
        checkpoint.load_blip2_weights(model, directory)
        if bert is not None:
            checkpoint.load_bert_text_weights(model, bert)
        return model.eval()

    @classmethod
    def from_lavis(cls, path: str | Path, config: RegionBLIPConfig | None = None, *, blip2: str | Path | None = None,
                   point_bert: str | Path | None = None, bert: str | Path | None = None,
                   **config_overrides) -> "RegionBLIP":
        """From an official LAVIS state dict, .pth (loaded weights-only) or .safetensors: RegionBLIP's, or a plain
        BLIP-2 OPT's (its image path; the RegionBLIP parts start as from_blip2 starts them). A complete state dict
        needs only `config`. LAVIS saves only trained weights, so a released checkpoint also needs `blip2` (a BLIP-2
        OPT directory; `config_overrides` as for from_blip2), `point_bert` (Point-BERT's pretrained .pt) and, for a
        model with qformer_text, `bert` (bert-base-uncased: the frozen image Q-Former's text side)."""
        if (config is None) == (blip2 is None) or (config is not None and config_overrides):
            raise ValueError("from_lavis takes either config= (a complete state dict) or blip2= with optional config "
                             "overrides (a state dict of trained weights only), not both")
        model = cls(config) if blip2 is None else cls.from_blip2(blip2, **config_overrides)
        if bert is not None:
            checkpoint.load_bert_text_weights(model, bert)
        if point_bert is not None:
            checkpoint_lavis.load_point_bert_weights(model, point_bert)
        checkpoint_lavis.load_lavis_weights(model, path, blip2_given=blip2 is not None,
                                            point_bert_given=point_bert is not None, bert_given=bert is not None)
        return model.eval()
