#!/usr/bin/env python3
"""Precision and recall of the DGA scorer (nexusctl/dga.py, the same arithmetic
as the XDP program) on generated DGA families and ordinary names.

  scripts/dga_eval.py [--n 2000] [--threshold 600] [--fit] [--json]

--fit searches small integer weights for the best F1 at the threshold and
prints them (copy into dga.WEIGHTS). Reported, not asserted: a cheap scorer
cannot catch dictionary DGAs (suppobox) by design.
"""
import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import dga_families as fam  # noqa: E402

from nexusctl import dga  # noqa: E402


def evaluate(dgas: dict[str, list[str]], benign: list[str], threshold: int, min_len: int, weights=None):
    def flagged(names):
        return sum(dga.score(dga.registrable_label(n), min_len, weights) >= threshold for n in names)
    per = {f: flagged(names) / len(names) for f, names in dgas.items()}
    tp = sum(flagged(names) for f, names in dgas.items() if f != "suppobox")
    total = sum(len(names) for f, names in dgas.items() if f != "suppobox")
    fp = flagged(benign)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / total
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "min_length": min_len, "weights": weights or dga.WEIGHTS,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "false_positive_rate": round(fp / len(benign), 4),
            "recall_by_family": {k: round(v, 4) for k, v in per.items()}, "benign": len(benign)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threshold", type=int, default=600)
    ap.add_argument("--min-length", type=int, default=8)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    words = fam.dictionary_words()
    dgas = {f: fam.generate(f, a.n, seed=7) for f in fam.FAMILIES}
    dgas["suppobox"] = fam.generate("suppobox", a.n, seed=7, words=words)
    benign = fam.ordinary(a.n * 3, seed=11)
    if a.fit:
        best = None
        for wr, wd, wc in itertools.product(range(1, 9), range(0, 9), range(0, 9)):
            w = {"w_rarity": wr, "w_digits": wd, "w_run": wc}
            r = evaluate(dgas, benign, a.threshold, a.min_length, w)
            key = (r["f1"], -r["false_positive_rate"])
            if best is None or key > best[0]:
                best = (key, r)
        print(json.dumps(best[1], indent=2))
        return
    rows = [evaluate(dgas, benign, t, a.min_length) for t in (300, 400, 500, 550, 600, 650, 700, 800)]
    if a.json:
        print(json.dumps({"at_threshold": evaluate(dgas, benign, a.threshold, a.min_length), "sweep": rows}))
        return
    print(f"DGA scorer on {a.n} names per family, {len(benign)} ordinary names (weights {dga.WEIGHTS})")
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'FPR':>7}  recall by family")
    for r in rows:
        fams = " ".join(f"{k}={v:.2f}" for k, v in r["recall_by_family"].items())
        print(f"{r['threshold']:>9} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['false_positive_rate']:>7.3f}  {fams}")


if __name__ == "__main__":
    main()
