"""The default tokenizer: a small lower-case byte-level BPE trained on the synthetic captions,
with OPT's conventions so that model, trainer and runtime treat it like OPT's GPT-2 tokenizer:

- ids 0..3 are <s>, <pad>, </s>, <unk> (OPT's order); </s> is both BOS and EOS and is prepended
  to every encoding, as OPT's tokenizer does;
- "\\n" is one token (byte-level 'Ċ'), the stop token of generation: captions are trained as
  caption + "\\n";
- byte-level BPE never needs <unk> (it is kept for OPT-compatible special-token ids), and any text,
  including real dataset captions, encodes and decodes losslessly after lower-casing.

Saved as a directory with tokenizer.json (read by the `tokenizers` runtime) and the
transformers files that `PreTrainedTokenizerFast.from_pretrained` needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION

from .data.synthetic_images import SyntheticImageDataset
from .data.synthetic_points import SyntheticPointDataset

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
BOS_TOKEN = EOS_TOKEN = "</s>"
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
NEWLINE = "\n"
DEFAULT_VOCAB_SIZE = 1024
CORPUS_SAMPLES_PER_MODALITY = 2000


def synthetic_caption_corpus(samples_per_modality: int = CORPUS_SAMPLES_PER_MODALITY) -> list[str]:
    """Train-split captions of all four synthetic modalities (no images or points are drawn)."""
    datasets = [SyntheticImageDataset(IMAGE, length=samples_per_modality),
                SyntheticImageDataset(IMAGE_REGION, length=samples_per_modality),
                SyntheticPointDataset(POINTCLOUD, length=samples_per_modality),
                SyntheticPointDataset(POINTCLOUD_REGION, length=samples_per_modality)]
    return [caption for dataset in datasets for caption in dataset.captions()]


def train_tokenizer(captions: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `captions`; merges stop early once every frequent word is a single token."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(captions, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)])
    return _wrap(tokenizer)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, unk_token=UNK_TOKEN, padding_side="right")


def default_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of the embedded default model (deterministic: same corpus, same merges)."""
    return train_tokenizer(synthetic_caption_corpus())


def newline_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Id of "\\n", the generation stop token; fails loudly if "\\n" is not a single token."""
    ids = tokenizer(NEWLINE, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f'"\\n" encodes to {len(ids)} tokens {ids}; this tokenizer cannot stop generation on it: '
                         "train it with training.tokenizer.train_tokenizer")
    return ids[0]


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write tokenizer.json (+ transformers config files) into `directory`; returns tokenizer.json's path."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    return directory / "tokenizer.json"


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by save_tokenizer (or any directory holding such a tokenizer.json)."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}: save one with training.tokenizer.save_tokenizer")
    return _wrap(Tokenizer.from_file(str(path)))
