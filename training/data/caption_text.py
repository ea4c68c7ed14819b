"""Caption cleaning as LAVIS' BlipCaptionProcessor.pre_caption (used for RefCOCO and Cap3D
captions): lower-case, replace . ! " ( ) * # : ; ~ by spaces, collapse spaces, keep 50 words.
ScanRefer descriptions are used raw, as released."""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def blip_caption(text: str, max_words: int = 50) -> str:
    text = _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower()))
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text
