"""DGA-likeness of a domain label: the reference for the kernel's scorer.

The XDP program scores the registrable label of each query (the label left of
the top-level one) with the same integer arithmetic as score() below, using the
character-pair rarity table and weights written into the nexus_dga map at `up`.
The certificate observer calls score() on SNI names too. Three cheap features:

- pair rarity: mean rarity of adjacent character pairs (0 common .. 255 never
  seen in ordinary words), from English word frequencies (wordfreq), scaled
  to 0..1000;
- digit ratio: digits per character, 0..1000;
- consonant run: the longest run of consonants, capped at RUN_CAP, 0..1000.

score = (w_rarity*rarity + w_digits*digits + w_run*run) / (sum of weights), 0..1000.
Names made of dictionary words (Suppobox-style DGAs) score low by design: the
cost is one pass over at most 63 bytes. scripts/dga_eval.py measures precision
and recall on DGA families and ordinary names.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"
ALPHA = len(ALPHABET) + 1          # + "other"; NEXUS_DGA_ALPHA in nexus_structs.h
OTHER = ALPHA - 1
RUN_CAP = 6
VOWELS = set("aeiou")
TABLE_FILE = Path(__file__).resolve().parent / "data" / "dga_bigrams.json"
# Weights from scripts/dga_eval.py --fit (tests/helpers/dga_families.py): at the default
# threshold 600, precision 0.998, recall 0.66 (0 on dictionary DGAs), 0.2% of ordinary names flagged.
# The digit ratio earned no weight: pair rarity already catches digit-heavy labels.
WEIGHTS = {"w_rarity": 3, "w_digits": 0, "w_run": 2}


def alpha_index(ch: int) -> int:
    """Index of a byte in the scorer's alphabet (upper case folds to lower)."""
    if 65 <= ch <= 90:
        ch += 32
    if 97 <= ch <= 122:
        return ch - 97
    if 48 <= ch <= 57:
        return 26 + ch - 48
    if ch == 45:
        return 36
    return OTHER


@lru_cache(maxsize=1)
def rarity_table() -> bytes:
    data = json.loads(TABLE_FILE.read_text())
    table = bytes(data["rarity"])
    if len(table) != ALPHA * ALPHA:
        raise ValueError(f"{TABLE_FILE}: expected {ALPHA * ALPHA} entries")
    return table


def features(label: str | bytes) -> tuple[int, int, int]:
    b = label.encode() if isinstance(label, str) else label
    n = len(b)
    table = rarity_table()
    idx = [alpha_index(c) for c in b]
    rsum = sum(table[idx[i] * ALPHA + idx[i + 1]] for i in range(n - 1))
    rarity = rsum * 1000 // (255 * (n - 1)) if n > 1 else 0
    digits = sum(1 for c in b if 48 <= c <= 57) * 1000 // n if n else 0
    run = best = 0
    for c in b:
        lc = c + 32 if 65 <= c <= 90 else c
        if 97 <= lc <= 122 and chr(lc) not in VOWELS:
            run += 1
            best = max(best, run)
        else:
            run = 0
    return rarity, digits, min(best, RUN_CAP) * 1000 // RUN_CAP


def score(label: str | bytes, min_length: int = 8, weights: dict | None = None) -> int:
    """0..1000, higher is more DGA-like; labels shorter than min_length score 0."""
    b = label.encode() if isinstance(label, str) else label
    if len(b) < min_length or len(b) > 63:
        return 0
    w = weights or WEIGHTS
    r, d, c = features(b)
    total = w["w_rarity"] + w["w_digits"] + w["w_run"]
    return (w["w_rarity"] * r + w["w_digits"] * d + w["w_run"] * c) // total


def registrable_label(name: str) -> str:
    """The label the kernel scores: the one left of the last label ("" for one-label names)."""
    labels = [x for x in name.rstrip(".").split(".") if x]
    return labels[-2] if len(labels) >= 2 else ""


def score_name(name: str, min_length: int = 8) -> int:
    return score(registrable_label(name), min_length)


def table_values(weights: dict | None = None) -> dict:
    """Field values of struct nexus_dga_table for the config writer."""
    return {"rarity": rarity_table(), **(weights or WEIGHTS)}


def build_table(words: list[tuple[str, float]]) -> list[int]:
    """Pair rarity from (word, frequency) pairs: 0..255, -log2 of the pair's share, scaled."""
    import math
    counts = [0.0] * (ALPHA * ALPHA)
    for word, freq in words:
        b = word.lower().encode("ascii", "ignore")
        for i in range(len(b) - 1):
            counts[alpha_index(b[i]) * ALPHA + alpha_index(b[i + 1])] += freq
    total = sum(counts) or 1.0
    out = []
    for c in counts:
        if c <= 0:
            out.append(255)
            continue
        bits = -math.log2(c / total)            # ~5 (very common) .. ~30 (seen once)
        out.append(max(0, min(255, round((bits - 5.0) * 16))))
    return out
