"""Blocklist formats, rule sources and precedence, hashing (no kernel)."""
import random
import textwrap

import pytest

from nexusctl.errors import UsageError
from nexusctl.policy import hashing, store
from nexusctl.policy.formats import guess_format, parse_file
from nexusctl.policy.rules import Attrs, Group, pattern_kind, qtype_mask

BLOCK = Attrs.make("block", 1000)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def rules(parsed):
    return {(p, g.attrs.action, g.attrs.to, g.attrs.block) for g in parsed.groups for p in g.patterns}


def test_domains_format_with_comments_and_bad_lines(tmp_path):
    p = write(tmp_path, "list.txt", """\
        # a comment
        Ads.Example.COM
        tracker.example.
        *.metrics.example   # wildcard with a comment
        bad..name
        two names
        ; another comment style
        """)
    parsed = parse_file(p, "domains", BLOCK)
    assert {r[0] for r in rules(parsed)} == {"ads.example.com", "tracker.example", "*.metrics.example"}
    assert parsed.problems == [f"{p}:5: 'bad..name' is not a pattern: use name.example, *.example (below it) "
                               f"or prefix*", f"{p}:6: expected one name, got 'two names'"]


def test_strict_stops_at_the_first_bad_line(tmp_path):
    p = write(tmp_path, "list.txt", "good.example\nbad..name\n")
    with pytest.raises(UsageError, match=r"list.txt:2: "):
        parse_file(p, "domains", BLOCK, strict=True)


def test_hosts_format(tmp_path):
    p = write(tmp_path, "hosts", """\
        127.0.0.1 localhost
        ::1 localhost ip6-localhost
        0.0.0.0 ads.example tracker.example
        127.0.0.1 telemetry.example
        198.18.0.5 printer.lan.example
        not-an-address foo.example
        """)
    parsed = parse_file(p, "hosts", BLOCK)
    assert rules(parsed) == {("ads.example", "block", None, None), ("tracker.example", "block", None, None),
                             ("telemetry.example", "block", None, None),
                             ("printer.lan.example", "synthesize", "198.18.0.5", None)}
    assert len(parsed.problems) == 1 and ":6:" in parsed.problems[0]


def test_adblock_format(tmp_path):
    p = write(tmp_path, "easylist.txt", """\
        [Adblock Plus 2.0]
        ! Title: test list
        ||ads.example^
        ||track.example^$third-party
        @@||ok.ads.example^
        ##.banner
        ||ads.example/path
        ||x.example^$domain=foo.example
        """)
    parsed = parse_file(p, "adblock", BLOCK)
    assert rules(parsed) == {("ads.example", "block", None, None), ("*.ads.example", "block", None, None),
                             ("track.example", "block", None, None), ("*.track.example", "block", None, None),
                             ("ok.ads.example", "allow", None, None), ("*.ok.ads.example", "allow", None, None)}
    assert [x.split(":")[1] for x in parsed.problems] == ["6", "7", "8"]


def test_rpz_format(tmp_path):
    p = write(tmp_path, "policy.rpz", """\
        $TTL 300
        @ IN SOA localhost. root.localhost. 1 3600 600 86400 300
        @ IN NS localhost.
        bad.example CNAME .
        *.bad.example CNAME .
        nodata.example CNAME *.
        ok.bad.example CNAME rpz-passthru.
        quiet.example CNAME rpz-drop.
        local.example A 198.18.0.30
        local.example AAAA 2001:db8::30
        other.example CNAME elsewhere.example.
        32.1.0.18.198.rpz-ip CNAME .
        """)
    parsed = parse_file(p, "rpz", BLOCK)
    assert rules(parsed) == {("bad.example", "block", None, "nxdomain"), ("*.bad.example", "block", None, "nxdomain"),
                             ("nodata.example", "block", None, "nodata"), ("ok.bad.example", "allow", None, None),
                             ("quiet.example", "block", None, "drop"),
                             ("local.example", "synthesize", "198.18.0.30,2001:db8::30", None)}
    assert len(parsed.problems) == 2


def test_format_guessing(tmp_path):
    assert guess_format(write(tmp_path, "a.rpz", "@ SOA a. b. 1 1 1 1 1\n")) == "rpz"
    assert guess_format(write(tmp_path, "b.txt", "||ads.example^\n")) == "adblock"
    assert guess_format(write(tmp_path, "c.txt", "0.0.0.0 ads.example\n")) == "hosts"
    assert guess_format(write(tmp_path, "d.txt", "ads.example\n")) == "domains"


def test_pattern_kinds_and_limits():
    assert pattern_kind("*.Example.COM") == ("wildcard", "example.com")
    assert pattern_kind("ads.*") == ("prefix", "ads.")
    assert pattern_kind("host.example.") == ("exact", "host.example")
    with pytest.raises(ValueError):
        pattern_kind("*")
    with pytest.raises(ValueError):
        pattern_kind("a" * 70 + "*")


def test_qtype_mask():
    assert qtype_mask([]) == 0xFFFF
    assert qtype_mask(["A", "aaaa"]) == (1 << 0) | (1 << 7)
    assert qtype_mask(["NAPTR"]) == 1 << 15


def test_bulk_keys_equal_scalar_keys():
    rng = random.Random(5)
    seeds = (rng.getrandbits(64), rng.getrandbits(64))
    pats = [[bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(rng.randint(1, 63)))
             for _ in range(rng.randint(1, 6))] for _ in range(1500)]
    kinds = [rng.choice([1, 2]) for _ in pats]
    bulk = hashing.keys_for_names([b".".join(p).decode() for p in pats], kinds, seeds)
    for i, (p, k) in enumerate(zip(pats, kinds)):
        assert bulk[16 * i:16 * i + 16] == hashing.key(p, k, seeds)


def test_seeds_change_every_key():
    a = hashing.key([b"example", b"com"], 1, (1, 2))
    b = hashing.key([b"example", b"com"], 1, (3, 2))
    assert a[:8] != b[:8] and a[8:] == b[8:]


def test_sources_precedence_and_runtime_store(tmp_path):
    from nexusctl.config import load_config_text
    bl = write(tmp_path, "bl.txt", "a.example\nb.example\n")
    cfg = load_config_text(f"state_dir: {tmp_path / 'st'}\nblocklists: [{{path: {bl}}}]\n"
                           f"policies: [{{pattern: a.example, action: allow, priority: 5}}]\n")
    store.save_runtime(cfg.state_dir, {"b.example": Attrs.make("synthesize", 1, "198.18.0.1")})
    store.save_import(cfg.state_dir, "imp", [Group(BLOCK, ["c.example", "b.example"])], {})
    eff = store.effective_rules(store.all_sources(cfg))
    assert eff["a.example"][0].action == "allow" and eff["a.example"][1] == "config"
    assert eff["b.example"][0].action == "synthesize" and eff["b.example"][1] == "runtime"
    assert eff["c.example"][1] == "import:imp"
    only_cfg = store.effective_rules(store.all_sources(cfg, config_only=True))
    assert set(only_cfg) == {"a.example", "b.example"} and only_cfg["b.example"][0].action == "block"
    assert store.forget_runtime_and_imports(cfg.state_dir) == (1, 1)
    assert store.load_runtime(cfg.state_dir) == {}
