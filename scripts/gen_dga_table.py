#!/usr/bin/env python3
"""Regenerate nexusctl/data/dga_bigrams.json from wordfreq's English list (dev time only)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wordfreq import top_n_list, word_frequency  # noqa: E402

from nexusctl import dga  # noqa: E402

words = [w for w in top_n_list("en", 50000) if w.isascii() and w.isalpha()]
pairs = [(w, word_frequency(w, "en")) for w in words]
table = dga.build_table(pairs)
out = {"source": "wordfreq top 50000 English words, frequency-weighted character pairs",
       "alphabet": dga.ALPHABET + "?", "rarity": table}
dga.TABLE_FILE.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {dga.TABLE_FILE} ({len(table)} pairs, {sum(1 for t in table if t == 255)} unseen)")
