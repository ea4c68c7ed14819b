"""What a replay measured, as the JSON and CSV summaries of python -m tools.replay: no graph needed here.

Tally is fed from two sides: the player (each region array it publishes, with its header stamp) and the
descriptions subscription (each RegionDescriptionArray, whose header is the described frame's). They meet on
the stamp, which the node copies from the frame the regions were matched to. Latency is the consumer's view,
as the demo reports it: from publishing a region array to receiving its descriptions.

Accuracy is training.metrics.attribute_exact_match (the demo's scorer) over the regions whose (stamp, id) the
bag's ground truth names; agreement with the live run compares each replayed text with the one the bag
recorded on /descriptions for the same (stamp, id).
"""

import csv
import threading
from dataclasses import dataclass, field
from pathlib import Path

from regionblip_msgs.msg import RegionDescriptionArray

from regionblip_ros.sync import stamp_to_ns
from tools.latency import PERCENTILES, percentiles_ms

DIFFERENCES_SHOWN = 5  # differing (live, replayed) texts quoted in the summary



@dataclass
class Sent:
    """One region array the player published."""

    modality: str
    stamp_ns: int
    region_ids: list[str]
    published: float  # time.monotonic() right before publishing
    answered: threading.Event = field(default_factory=threading.Event)


class Tally:
    """Region arrays published and the description arrays answering them; thread-safe.

    An answer carries the header of the frame the node matched the regions to: the array's own stamp, or with
    a sync slop a neighbour's. It answers the waiting array with its stamp, else the nearest within the slop."""

    def __init__(self, slop_ns: int = 0):
        self.slop_ns = slop_ns
        self._lock = threading.Lock()
        self._waiting: dict[int, list[Sent]] = {}
        self.sent: list[Sent] = []
        self.frames: dict[str, int] = {}                          # modality -> frames published
        self.answers: list[tuple[str, float, float, int]] = []    # (modality, latency ms, inference ms, regions)
        self.texts: dict[tuple[int, str], tuple[str, str]] = {}   # (answer's stamp, id) -> (modality, text)
        self.by_region: dict[tuple[int, str], tuple[str, str]] = {}  # the same under the region array's stamp
        self.unmatched = 0  # description arrays answering no region array of this replay

    def frame(self, modality: str) -> None:
        with self._lock:
            self.frames[modality] = self.frames.get(modality, 0) + 1

    def send(self, modality: str, stamp_ns: int, region_ids: list[str], published: float) -> Sent:
        """Call before publishing, so that no answer can arrive ahead of its record."""
        sent = Sent(modality, stamp_ns, region_ids, published)
        with self._lock:
            self.sent.append(sent)
            self._waiting.setdefault(stamp_ns, []).append(sent)
        return sent

    def _waiting_for(self, stamp: int) -> Sent | None:
        nearest = min(self._waiting, key=lambda waiting: abs(waiting - stamp), default=None)
        if nearest is None or abs(nearest - stamp) > self.slop_ns:
            return None
        queue = self._waiting[nearest]
        sent = queue.pop(0)
        if not queue:
            del self._waiting[nearest]
        return sent

    def answer(self, msg: RegionDescriptionArray, received: float) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            sent = self._waiting_for(stamp)
            if sent is None:
                self.unmatched += 1
                return
            self.answers.append((sent.modality, (received - sent.published) * 1e3, msg.inference_ms,
                                 len(msg.descriptions)))
            for item in msg.descriptions:
                self.texts[(stamp, item.id)] = self.by_region[(sent.stamp_ns, item.id)] = (sent.modality, item.text)
        sent.answered.set()

    def answered(self) -> int:
        with self._lock:
            return len(self.answers) + self.unmatched


def accuracy(texts: dict[tuple[int, str], tuple[str, str]], truths: dict[tuple[int, str], tuple[str, dict]]) \
        -> dict[str, dict]:
    """modality -> attribute exact match (and per attribute) over the described regions that have a truth."""
    if not truths:
        return {}
    from training.metrics import attribute_exact_match  # imports torch: only where there is something to score

    scored: dict[str, tuple[list[str], list[dict]]] = {}
    for key, (modality, truth) in truths.items():
        if key in texts:
            predictions, targets = scored.setdefault(modality, ([], []))
            predictions.append(texts[key][1])
            targets.append(truth)
    return {modality: {"regions": len(predictions), **{name.split("/")[1]: round(value, 4) for name, value in
                                                       attribute_exact_match(predictions, targets, modality).items()}}
            for modality, (predictions, targets) in sorted(scored.items())}


def agreement(texts: dict[tuple[int, str], tuple[str, str]], live: dict[tuple[int, str], str]) -> dict | None:
    """How the replayed descriptions compare with those the bag recorded live; None when it recorded none."""
    if not live:
        return None
    common = sorted(set(texts) & set(live))
    differing = [key for key in common if texts[key][1] != live[key]]
    return {"compared": len(common), "same_text": len(common) - len(differing),
            "only_live": len(set(live) - set(texts)), "only_replayed": len(set(texts) - set(live)),
            "differing": [{"stamp_ns": stamp, "id": region, "live": live[(stamp, region)],
                           "replayed": texts[(stamp, region)][1]} for stamp, region in differing[:DIFFERENCES_SHOWN]]}


def modality_counts(tally: Tally, node_received: dict[str, dict[str, int]], jobs_dropped: dict[str, int],
                    scores: dict[str, dict]) -> dict[str, dict]:
    """Per modality: what went in, what came out, what was lost on the way and where."""
    modalities = sorted({sent.modality for sent in tally.sent} | set(tally.frames))
    counts = {}
    for modality in modalities:
        sent = [s for s in tally.sent if s.modality == modality]
        answers = [a for a in tally.answers if a[0] == modality]
        received = node_received.get(modality, {})
        counts[modality] = {
            "frames_published": tally.frames.get(modality, 0),
            "frames_received_by_node": received.get("frames", 0),
            "region_arrays_published": len(sent),
            "region_arrays_received_by_node": received.get("region_arrays", 0),
            "regions_published": sum(len(s.region_ids) for s in sent),
            "description_arrays": len(answers),
            "region_arrays_unanswered": len(sent) - len(answers),
            "jobs_dropped_by_node": jobs_dropped.get(modality, 0),
            "regions_described": sum(a[3] for a in answers),
            "latency_ms": percentiles_ms([a[1] for a in answers]),
            "inference_ms": percentiles_ms([a[2] for a in answers]),
            "accuracy": scores.get(modality),
        }
    return counts


CSV_COLUMNS = ("modality", "frames_published", "frames_received_by_node", "region_arrays_published",
               "region_arrays_received_by_node", "description_arrays", "region_arrays_unanswered",
               "jobs_dropped_by_node", "regions_published", "regions_described",
               *(f"latency_ms_p{p}" for p in PERCENTILES), "regions_scored", "exact_match", "size", "colour", "shape")


def write_csv(path: Path, modalities: dict[str, dict]) -> None:
    """One row per modality of the summary's counts, latency percentiles and accuracy (blank where none)."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, CSV_COLUMNS, restval="")
        writer.writeheader()
        for modality, counts in modalities.items():
            scores = counts["accuracy"] or {}
            row = {key: value for key, value in counts.items() if key in CSV_COLUMNS}
            row.update({f"latency_ms_{p}": ms for p, ms in counts["latency_ms"].items()})
            row.update({key: scores[key] for key in ("exact_match", "size", "colour", "shape") if key in scores})
            writer.writerow({**row, "modality": modality, "regions_scored": scores.get("regions", "")})


def summary_table(summary: dict) -> str:
    """The summary as a few lines for the terminal."""
    lines = [f"{'modality':<18} {'arrays':>6} {'answered':>8} {'lost':>5} {'regions':>7} {'exact':>6}   "
             "latency p50 / p90 / p99"]
    for modality, m in summary["modalities"].items():
        exact = "-" if not m["accuracy"] else f'{m["accuracy"]["exact_match"]:.3f}'
        lat = m["latency_ms"]
        latency = "-" if lat["p50"] is None else f'{lat["p50"]:.0f} / {lat["p90"]:.0f} / {lat["p99"]:.0f} ms'
        lines.append(f"{modality:<18} {m['region_arrays_published']:>6} {m['description_arrays']:>8} "
                     f"{m['region_arrays_unanswered']:>5} {m['regions_described']:>7} {exact:>6}   {latency}")
    live = summary["live_agreement"]
    if live is not None:
        lines.append(f"same text as the live run for {live['same_text']} of {live['compared']} regions described "
                     f"in both ({live['only_live']} described only live, {live['only_replayed']} only now)")
    return "\n".join(lines)
