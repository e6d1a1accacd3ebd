"""The DGA reference scorer: sane on obvious cases; the evaluation script runs."""
import json
import subprocess
import sys
from pathlib import Path

from nexusctl import dga

ROOT = Path(__file__).resolve().parents[2]


def test_random_labels_score_above_words():
    for word, random_label in (("wikipedia", "xjwqkzpvbtqr"), ("stackoverflow", "a3f9c2e1b7d44e21"),
                               ("cloudflare", "hgfd7s6d5f4g3h2")):
        assert dga.score(random_label) > dga.score(word) + 200


def test_short_labels_and_one_label_names_score_zero():
    assert dga.score("qzx") == 0
    assert dga.score_name("localhost") == 0
    assert dga.registrable_label("a.b.example.com.") == "example"


def test_case_does_not_matter():
    assert dga.score("XJWQKZPVBTQR") == dga.score("xjwqkzpvbtqr")


def test_eval_script_reports_precision_and_recall():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/dga_eval.py"), "--n", "200", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["at_threshold"]
    assert set(d["recall_by_family"]) >= {"conficker", "necurs", "bamital", "suppobox"}
    assert 0 <= d["precision"] <= 1 and 0 <= d["recall"] <= 1
