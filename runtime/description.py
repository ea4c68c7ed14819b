"""What the runtime returns for each region, image or object it describes."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Description:
    """One generated description.

    text: the decoded words, stripped, without the stop token.
    score: mean log-probability of the generated tokens (<= 0; higher is more confident).
    token_ids: the generated token ids, stop token excluded.
    timings_ms: wall times of this call's stages in milliseconds (e.g. "preprocess", "encode",
        "qformer", "decode", "total"); shared by every description of the same call, because a
        frame's features and its regions' decoding are computed together.
    """

    text: str
    score: float
    token_ids: tuple[int, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
