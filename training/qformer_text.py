"""The Q-Former's text side and the two losses the release trains with it (RegionBLIP's `_forward_modal_align`):
ITC, query-text contrastive, and ITG, captioning by the Q-Former itself (BLIP-2 §3.1; ITM is not trained here).

Per Q-Former (`qformer`, `qformer_pc`): BERT's word and position embeddings (transformers' Blip2TextEmbeddings) and
its LM head. The text FFN lives in the Q-Former's own layers (`intermediate`/`output`, which RegionBLIPConfig's
`qformer_text` switches on). Shared by all modalities: the ITC projections of the query outputs (one per modality)
and of the text [CLS], and the temperature. Release names -> ours: `Qformer.cls.predictions` -> `predictions`,
`stage1_proj_<m>` -> `vision_projection[m]`, `stage1_proj_text` -> `text_projection`, `temp` -> `temp`.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerModel
from transformers.activations import ACT2FN
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from contract.modalities import MODALITIES

from .config import RegionBLIPConfig

LABEL_SMOOTHING = 0.1  # both losses, as released
QFORMERS = ("qformer", "qformer_pc")


class PredictionTransform(nn.Module):
    def __init__(self, hidden_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.transform_act_fn = ACT2FN[hidden_act]
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden)))


class Predictions(nn.Module):
    """BERT's LM head: transform, then the word embeddings (tied, as in BERT) and a bias."""

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.transform = PredictionTransform(hidden_size, hidden_act, layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


class QFormerText(nn.Module):
    """One Q-Former's text input and output: the release's `Qformer.bert.embeddings` (word, position) and
    `Qformer.cls.predictions`. The embeddings' LayerNorm is the Q-Former's own `layernorm`, shared with the queries."""

    def __init__(self, config: RegionBLIPConfig):
        super().__init__()
        qformer = config.qformer_config()
        qformer.vocab_size = config.qformer_text_vocab_size
        self.embeddings = Blip2TextEmbeddings(qformer)
        self.predictions = Predictions(qformer.hidden_size, qformer.vocab_size, qformer.hidden_act,
                                       qformer.layer_norm_eps)
        std = qformer.initializer_range  # BERT's init; BLIP-2's come from bert-base-uncased (checkpoint.load_bert)
        for embedding in (self.embeddings.word_embeddings, self.embeddings.position_embeddings):
            nn.init.normal_(embedding.weight, std=std)
        nn.init.normal_(self.predictions.transform.dense.weight, std=std)
        nn.init.zeros_(self.predictions.transform.dense.bias)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden, self.embeddings.word_embeddings.weight)


def gather_across_ranks(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' features, without gradient (the release's concat_all_gather), and this rank's offset in them."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    parts = [torch.empty_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, features.detach().contiguous())
    return torch.cat(parts), dist.get_rank() * features.shape[0]


def contrastive_loss(query_features: torch.Tensor, text_features: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """ITC: query_features (B, Q, E) and text_features (B, E), both normalised; sample b's queries and text b match.
    A sample's similarity to a text is its best query's; cross-entropy both ways over every rank's batch."""
    all_queries, offset = gather_across_ranks(query_features)  # (N, Q, E)
    all_texts, _ = gather_across_ranks(text_features)  # (N, E)
    sim_i2t = torch.einsum("bqe,ne->bnq", query_features, all_texts).amax(-1) / temp  # (B, N)
    sim_t2i = torch.einsum("be,nqe->bnq", text_features, all_queries).amax(-1) / temp  # (B, N)
    targets = torch.arange(query_features.shape[0], device=query_features.device) + offset
    return (F.cross_entropy(sim_i2t, targets, label_smoothing=LABEL_SMOOTHING)
            + F.cross_entropy(sim_t2i, targets, label_smoothing=LABEL_SMOOTHING)) / 2


def generation_attention_mask(text_mask: torch.Tensor, num_queries: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, Q + T, Q + T) mask for ITG's one pass over [queries; text]: queries see only queries, text sees
    every query and, causally, the unpadded text before it. The queries' outputs are then those of the query-only
    pass, as the release's reuse of that pass's keys and values (past_key_values) gives."""
    batch, length = text_mask.shape
    total = num_queries + length
    allowed = torch.zeros(batch, total, total, dtype=torch.bool, device=text_mask.device)
    allowed[:, :, :num_queries] = True
    causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    allowed[:, num_queries:, num_queries:] = causal & text_mask[:, None, :].bool()
    additive = torch.zeros(allowed.shape, dtype=dtype, device=text_mask.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class QFormerTextLosses(nn.Module):
    """The text side of both Q-Formers, the ITC heads, and the ITC / ITG losses of one modality's batch."""

    def __init__(self, config: RegionBLIPConfig):
        super().__init__()
        width, embed = config.qformer_config().hidden_size, config.qformer_embed_dim
        self.bos_token_id = config.qformer_text_bos_token_id
        self.text = nn.ModuleDict({name: QFormerText(config) for name in QFORMERS})
        self.vision_projection = nn.ModuleDict({m: nn.Linear(width, embed) for m in MODALITIES})
        self.text_projection = nn.Linear(width, embed)
        self.temp = nn.Parameter(torch.tensor(0.07))

    def text_features(self, qformer: Blip2QFormerModel, name: str, input_ids, attention_mask) -> torch.Tensor:
        """The captions alone through the Q-Former (no queries, no cross-attention): projected [CLS], (B, E)."""
        embeds = self.text[name].embeddings(input_ids=input_ids)  # (B, T, W)
        hidden = qformer(query_embeds=embeds, query_length=0, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_projection(hidden[:, 0]), dim=-1)

    def itc(self, qformer: Blip2QFormerModel, name: str, modality: str, query_output, input_ids,
            attention_mask) -> torch.Tensor:
        query_features = F.normalize(self.vision_projection[modality](query_output), dim=-1)  # (B, Q, E)
        text_features = self.text_features(qformer, name, input_ids, attention_mask)
        return contrastive_loss(query_features, text_features, self.temp)

    def generation_logits(self, qformer: Blip2QFormerModel, name: str, queries, features, decoder_ids,
                          attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over [queries; decoder text]: the queries' outputs (B, Q, W) and the text logits (B, T, V)."""
        num_queries = queries.shape[1]
        embeds = self.text[name].embeddings(input_ids=decoder_ids, query_embeds=queries)  # (B, Q + T, W)
        mask = generation_attention_mask(attention_mask, num_queries, embeds.dtype)
        hidden = qformer(query_embeds=embeds, query_length=num_queries, attention_mask=mask,
                         encoder_hidden_states=features).last_hidden_state  # (B, Q + T, W)
        return hidden[:, :num_queries], self.text[name].logits(hidden[:, num_queries:])

    def itg(self, qformer: Blip2QFormerModel, name: str, queries, features, input_ids,
            attention_mask) -> torch.Tensor:
        """Next-token loss on the captions, [DEC] (bos) in place of the first token, none on padding."""
        decoder_ids = input_ids.clone()
        decoder_ids[:, 0] = self.bos_token_id
        labels = decoder_ids.masked_fill(attention_mask == 0, -100)
        _, logits = self.generation_logits(qformer, name, queries, features, decoder_ids, attention_mask)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                               label_smoothing=LABEL_SMOOTHING)
