"""Domain generation algorithms in the shape of known malware families, and
ordinary names, for measuring the DGA scorer (scripts/dga_eval.py) and for tests.
Deterministic: each generator takes a seed."""
from __future__ import annotations

import hashlib
import random

TLDS = ["com", "net", "org", "info", "biz", "ru", "cn", "top", "xyz"]
VOWELS = "aeiou"
CONSONANTS = "bcdfghjklmnpqrstvwxyz"


def conficker(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(8, 11)))


def cryptolocker(rng: random.Random) -> str:
    # an LCG over the date, as the family did; here seeded per name
    x = rng.getrandbits(32)
    out = []
    for _ in range(rng.randint(12, 15)):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out.append(chr(ord("a") + (x >> 16) % 26))
    return "".join(out)


def necurs(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(8, 21)))


def bamital(rng: random.Random) -> str:
    return hashlib.md5(rng.randbytes(8)).hexdigest()[: rng.randint(16, 32)]


def pykspa(rng: random.Random) -> str:
    # pronounceable-ish: consonant/vowel alternation with occasional doubles
    n = rng.randint(8, 14)
    return "".join((rng.choice(CONSONANTS) if i % 2 == 0 else rng.choice(VOWELS)) for i in range(n))


def suppobox(rng: random.Random, words: list[str]) -> str:
    # dictionary DGA: two words glued together; made to look ordinary
    return rng.choice(words) + rng.choice(words)


FAMILIES = {"conficker": conficker, "cryptolocker": cryptolocker, "necurs": necurs, "bamital": bamital,
            "pykspa": pykspa}


def generate(family: str, n: int, seed: int = 1, words: list[str] | None = None) -> list[str]:
    rng = random.Random(f"{family}:{seed}")
    out = []
    for _ in range(n):
        label = suppobox(rng, words) if family == "suppobox" else FAMILIES[family](rng)
        out.append(f"{label}.{rng.choice(TLDS)}")
    return out


def ordinary(n: int, seed: int = 2) -> list[str]:
    """Ordinary registrable names: words outside the scorer's training list (ranks
    50k-150k in English, and German, French, Spanish, Dutch), alone or two together."""
    from wordfreq import top_n_list
    pool = [w for w in top_n_list("en", 150000)[50000:] if w.isascii() and w.isalpha()]
    for lang in ("de", "fr", "es", "nl"):
        pool += [w for w in top_n_list(lang, 20000) if w.isascii() and w.isalpha()]
    rng = random.Random(f"ordinary:{seed}")
    out = []
    while len(out) < n:
        w = rng.choice(pool)
        if rng.random() < 0.5:
            w += rng.choice(pool)
        if rng.random() < 0.1:
            w += str(rng.randint(1, 99))
        out.append(f"{w.lower()}.{rng.choice(['com', 'net', 'org', 'de', 'fr', 'io'])}")
    return out


def dictionary_words() -> list[str]:
    from wordfreq import top_n_list
    return [w for w in top_n_list("en", 5000) if w.isascii() and w.isalpha() and len(w) >= 4]
