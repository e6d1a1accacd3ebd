"""DNS policy on real queries in the lab: every action, precedence, the cache,
removal, the import formats, sync."""
import subprocess

import pytest
import yaml

from helpers.cli import dig, nexusctl
from integration.conftest import labcfg


@pytest.fixture
def pol(lab):
    """The lab with no runtime rules or imports before and after each test."""
    assert nexusctl(*labcfg(lab), "policy", "sync").rc == 0
    yield lab
    nexusctl(*labcfg(lab), "policy", "sync")


def q(lab, name, qtype="A", server=None):
    r = dig(lab.cli_ns, server or lab.srv_v4, name, qtype)
    return r.stdout


def status(out):
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "TIMEOUT"


def answers(out):
    lines = out.split("ANSWER SECTION:")[1].split("\n\n")[0].strip().splitlines() if "ANSWER SECTION:" in out else []
    return [ln.split()[-1] for ln in lines]


def add(lab, *args):
    r = nexusctl("--json", *labcfg(lab), "policy", "add", *args)
    assert r.rc == 0, r.stderr
    return r.json


def test_block_synthesize_redirect_allow(pol):
    lab = pol
    add(lab, "h10.lab.test", "--action", "block")
    add(lab, "svc.lab.test", "--action", "synthesize", "--to", "198.18.0.50")
    add(lab, "svc6.lab.test", "--action", "synthesize", "--to", "2001:db8:18::50")
    add(lab, "h11.lab.test", "--action", "redirect", "--to", "198.18.0.51")
    add(lab, "*.lab.test", "--action", "block", "--priority", "500")
    add(lab, "h12.lab.test", "--action", "allow", "--priority", "100")

    assert status(q(lab, "h10.lab.test")) == "NXDOMAIN"
    assert status(q(lab, "H10.LAB.test")) == "NXDOMAIN"          # case-insensitive
    out = q(lab, "svc.lab.test")
    assert status(out) == "NOERROR" and answers(out) == ["198.18.0.50"]
    out = q(lab, "svc6.lab.test", "AAAA", lab.srv_v6)
    assert answers(out) == ["2001:db8:18::50"]
    out = q(lab, "h11.lab.test")                                   # the resolver's answer, rewritten
    assert answers(out) == ["198.18.0.51"]
    assert "300" in out.split("ANSWER SECTION:")[1]               # TTL kept
    assert answers(q(lab, "h12.lab.test")) == ["198.19.0.12"]      # allow beats the wider block
    assert status(q(lab, "h13.lab.test")) == "NXDOMAIN"            # the wider block
    pol_stats = nexusctl("--json", *labcfg(lab), "stats").json["policy"]
    assert pol_stats["blocked"] >= 3 and pol_stats["synthesized"] >= 2
    assert pol_stats["redirected"] >= 1 and pol_stats["allowed"] >= 1
    listed = nexusctl("--json", *labcfg(lab), "policy", "list").json
    assert {r["pattern"] for r in listed} >= {"h10.lab.test", "*.lab.test", "h12.lab.test"}
    assert set(listed[0]) >= {"pattern", "action", "to", "qtypes", "priority"}


def test_a_cached_name_blocked_afterwards_and_rm_restores_it(pol):
    lab = pol
    assert answers(q(lab, "h20.lab.test")) == ["198.19.0.20"]
    assert answers(q(lab, "h20.lab.test")) == ["198.19.0.20"]      # now from the kernel cache
    add(lab, "h20.lab.test", "--action", "block")
    assert status(q(lab, "h20.lab.test")) == "NXDOMAIN"
    r = nexusctl("--json", *labcfg(lab), "policy", "rm", "h20.lab.test")
    assert r.rc == 0 and r.json["removed"] == "h20.lab.test"
    assert answers(q(lab, "h20.lab.test")) == ["198.19.0.20"]


def test_rules_survive_reload_and_up_stays_unchanged(pol):
    lab = pol
    add(lab, "h30.lab.test", "--action", "block")
    r = nexusctl("--json", *labcfg(lab), "up")
    assert r.rc == 0 and r.json["changed"] is False, r.stdout
    assert nexusctl(*labcfg(lab), "reload").rc == 0
    assert status(q(lab, "h30.lab.test")) == "NXDOMAIN"


@pytest.mark.parametrize("response,want", [("refused", "REFUSED"), ("drop", "TIMEOUT")])
def test_block_response_from_config(pol, tmp_path, response, want):
    lab = pol
    cfg = yaml.safe_load(lab.config_path.read_text())
    cfg.setdefault("policy", {})["block_response"] = response
    cfg["policies"] = [{"pattern": "h40.lab.test", "action": "block"}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        assert nexusctl("-c", str(path), "up").rc == 0
        assert status(q(lab, "h40.lab.test")) == want
    finally:
        assert nexusctl(*labcfg(lab), "up").rc == 0
        nexusctl(*labcfg(lab), "policy", "sync")
    assert answers(q(lab, "h40.lab.test")) == ["198.19.0.40"]


LISTS = {
    "domains": ("h50.lab.test\n# comment\nh51.lab.test\n", ["h50.lab.test", "h51.lab.test"]),
    "hosts": ("0.0.0.0 h52.lab.test\n127.0.0.1 localhost\n", ["h52.lab.test"]),
    "adblock": ("! list\n||h53.lab.test^\n", ["h53.lab.test"]),
    "rpz": ("$TTL 60\n@ SOA localhost. root.localhost. 1 1 1 1 1\n@ NS localhost.\n"
            "h54.lab.test CNAME .\nh55.lab.test A 198.18.0.55\nh56.lab.test CNAME *.\n",
            ["h54.lab.test"]),
}


@pytest.mark.parametrize("fmt", list(LISTS))
def test_imports_of_each_format(pol, tmp_path, fmt):
    lab = pol
    text, blocked = LISTS[fmt]
    f = tmp_path / f"list.{fmt}"
    f.write_text(text)
    r = nexusctl("--json", *labcfg(lab), "policy", "import", str(f), "--format", fmt)
    assert r.rc == 0, r.stderr
    assert r.json["imported"] >= len(blocked) and r.json["kernel"]["rules"] >= len(blocked)
    for name in blocked:
        assert status(q(lab, name)) == "NXDOMAIN", name
    if fmt == "rpz":
        assert answers(q(lab, "h55.lab.test")) == ["198.18.0.55"]
        out = q(lab, "h56.lab.test")
        assert status(out) == "NOERROR" and answers(out) == []
    # sync makes the kernel match the config (no policies): the import is gone
    r = nexusctl("--json", *labcfg(lab), "policy", "sync")
    assert r.json["removed"] >= len(blocked)
    assert answers(q(lab, blocked[0])) != []


def test_import_reports_bad_lines_and_strict_applies_nothing(pol, tmp_path):
    lab = pol
    f = tmp_path / "bad.txt"
    f.write_text("h60.lab.test\nnot..valid\nh61.lab.test\n")
    r = nexusctl("--json", *labcfg(lab), "policy", "import", str(f), "--strict")
    assert r.rc == 2 and f"{f}:2:" in r.stderr
    assert answers(q(lab, "h60.lab.test")) == ["198.19.0.60"]          # nothing half-applied
    r = nexusctl("--json", *labcfg(lab), "policy", "import", str(f))
    assert r.rc == 0 and r.json["imported"] == 2 and r.json["skipped"] == 1
    assert f"{f}:2:" in r.json["problems"][0]
    assert status(q(lab, "h60.lab.test")) == "NXDOMAIN"


def test_bad_rules_are_usage_errors(pol):
    lab = pol
    r = nexusctl(*labcfg(lab), "policy", "add", "x.lab.test", "--action", "redirect")
    assert r.rc == 2 and "needs `to" in r.stderr
    r = nexusctl(*labcfg(lab), "policy", "add", "bad..name", "--action", "block")
    assert r.rc == 2
    r = nexusctl(*labcfg(lab), "policy", "rm", "never.added.test")
    assert r.rc == 2 and "no rule" in r.stderr
