"""Differential tests: `kiln hash` against reference.py, the identity spec of
issue 2 implemented independently in Python.

Every comparison checks the canonical text too (`kiln hash --canonical`), so a
mismatch shows the first differing byte instead of two unrelated digests."""
import hashlib
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, __import__("os").path.dirname(__file__))
import reference  # noqa: E402

# ---- helpers ------------------------------------------------------------------


def run_hash(kiln, data, *args):
    """kiln hash [args] - with data (bytes) on stdin; returns the parsed JSON."""
    p = kiln("hash", "--canonical", *args, "-", input=data)
    assert p.returncode == 0, (p.returncode, p.stderr, data[:300])
    out = json.loads(p.stdout.decode("utf-8"))
    for k in ("config_hash", "build_key"):
        assert len(out[k]) == 64 and all(c in "0123456789abcdef" for c in out[k]), out
    return out


def encode(recipe, ascii_only=False):
    return json.dumps(recipe, ensure_ascii=ascii_only).encode("utf-8")


def check_against_reference(kiln, recipe, data=None):
    if data is None:
        data = encode(recipe)
    out = run_hash(kiln, data)
    want_canon = reference.canonical_config(recipe)
    assert out["config_canonical"] == want_canon
    h, e = reference.identity(recipe)
    assert out["config_hash"] == h
    assert out["source_date_epoch"] == e
    assert out["source_date_epoch_given"] == ("source_date_epoch" in recipe)
    return out


def one_file_recipe(name="o", path="/etc/f", **extra):
    f = {"path": path}
    f.update(extra)
    return {"overlays": [{"name": name, "files": [f]}]}


# ---- the reference itself -----------------------------------------------------


def test_reference_reproduces_issue_vectors():
    for text, h, e in reference.ISSUE_VECTORS:
        assert reference.identity(json.loads(text)) == (h, e)


def test_reference_strip_set_is_pythons_str_strip():
    # The spec says the set is "exactly what Python's str.strip() removes";
    # the reference lists it explicitly, so both readings must agree.
    py = {c for c in range(0x110000) if chr(c).strip() == ""}
    assert py == set(reference.STRIP_SPACE)
    assert 0x180E not in reference.STRIP_SPACE and 0x200B not in reference.STRIP_SPACE


def test_reference_escaping_equals_json_dumps_for_every_code_point():
    # The claim that json.dumps(ensure_ascii=True) is exactly the specified
    # escaping, checked over every scalar value (surrogates are not strings
    # a recipe can hold).
    for lo in range(0, 0x110000, 0x1000):
        s = "".join(chr(c) for c in range(lo, lo + 0x1000) if not 0xD800 <= c <= 0xDFFF)
        assert reference.escape_string(s) == json.dumps(s, ensure_ascii=True)


def test_reference_serializer_equals_json_dumps_on_documents():
    r = one_file_recipe(name=" a\u2028\U0001F600\x7f", path="/\u00e9/\x01x",
                        content="\x00", mode="755")
    r["packages"] = ["zz", "a0", "zz"]
    assert reference.canonical_config(r) == reference.canonical_config_json_dumps(r)


# ---- the issue's vectors, verbatim --------------------------------------------


@pytest.mark.parametrize("text,h,e", reference.ISSUE_VECTORS)
def test_issue_vectors(kiln, text, h, e):
    out = run_hash(kiln, text.encode("utf-8"))
    assert out["config_hash"] == h
    assert out["source_date_epoch"] == e
    assert out["source_date_epoch_given"] is False


def test_issue_vector_from_file(kiln, tmp_path):
    text, h, e = reference.ISSUE_VECTORS[3]
    f = tmp_path / "recipe.json"
    f.write_bytes(text.encode("utf-8"))
    p = kiln("hash", f, check=0)
    out = json.loads(p.stdout)
    assert (out["config_hash"], out["source_date_epoch"]) == (h, e)


# ---- hand-written edge cases ---------------------------------------------------

ESCAPES = ['"', "\\", "\n", "\r", "\t", "\b", "\f"]
C0_OTHER = [chr(c) for c in range(0x20) if chr(c) not in ESCAPES]


@pytest.mark.parametrize("ch", ESCAPES + C0_OTHER + ["\x7f", "/"],
                         ids=lambda c: "U+%04X" % ord(c))
def test_escape_ascii_in_name_and_path(kiln, ch):
    if ch == "\x00":
        # NUL is refused in paths; names may hold it.
        r = one_file_recipe(name="n" + ch + "x", path="/etc/x")
    elif ch == "/":
        r = one_file_recipe(name="n/x", path="/etc/a/b")
    else:
        r = one_file_recipe(name="n" + ch + "x", path="/etc/a" + ch + "b")
    check_against_reference(kiln, r)
    check_against_reference(kiln, r, encode(r, ascii_only=True))


@pytest.mark.parametrize("lo", range(0x80, 0x100, 0x20), ids=lambda c: "U+%04X" % c)
def test_escape_latin1(kiln, lo):
    s = "".join(chr(c) for c in range(lo, lo + 0x20))
    r = one_file_recipe(name="x" + s + "x", path="/x" + s + "x")
    check_against_reference(kiln, r)


@pytest.mark.parametrize("s", ["\u2603", "\u2028", "\u2029", "\u0800", "\uffff", "\ufffd",
                               "\ue000", "\ufeff", "D\u00e9bian \u2603"],
                         ids=lambda s: "-".join("U+%04X" % ord(c) for c in s))
def test_escape_bmp(kiln, s):
    r = one_file_recipe(name="x" + s + "y", path="/x" + s + "y", content=s)
    out = check_against_reference(kiln, r)
    assert ("\\u%04x" % ord(s[-1])) in out["config_canonical"]


@pytest.mark.parametrize("s", ["\U0001F600", "\U00010000", "\U0010FFFF", "\U0001D11E\U0001F600"],
                         ids=lambda s: "-".join("U+%04X" % ord(c) for c in s))
def test_escape_astral_as_surrogate_pairs(kiln, s):
    r = one_file_recipe(name="x" + s, path="/" + s, content=s)
    out = check_against_reference(kiln, r)
    # lowercase hex surrogate pair, no literal astral character
    assert json.dumps(s)[1:-1] in out["config_canonical"]
    assert s not in out["config_canonical"]
    # also when the recipe itself spells the character as a surrogate pair
    check_against_reference(kiln, r, encode(r, ascii_only=True))


def test_escape_hex_is_lowercase(kiln):
    r = one_file_recipe(name="\u00ab\u00cd\u00ef\U0001F600")
    out = check_against_reference(kiln, r)
    assert "\\u00ab\\u00cd\\u00ef\\ud83d\\ude00" in out["config_canonical"]


STRIP_SPACE = sorted(reference.STRIP_SPACE)


@pytest.mark.parametrize("cp", STRIP_SPACE, ids=lambda c: "U+%04X" % c)
def test_whitespace_stripped_from_name_and_path_ends(kiln, cp):
    w = chr(cp)
    r = one_file_recipe(name=w + "motd" + w + w, path=w + w + "/etc/motd" + w)
    out = check_against_reference(kiln, r)
    plain = check_against_reference(kiln, one_file_recipe(name="motd", path="/etc/motd"))
    assert out["config_hash"] == plain["config_hash"]


@pytest.mark.parametrize("cp", STRIP_SPACE, ids=lambda c: "U+%04X" % c)
def test_whitespace_inside_is_kept(kiln, cp):
    w = chr(cp)
    r = one_file_recipe(name="a" + w + "b", path="/etc/a" + w + "b")
    out = check_against_reference(kiln, r)
    plain = check_against_reference(kiln, one_file_recipe(name="ab", path="/etc/ab"))
    assert out["config_hash"] != plain["config_hash"]


@pytest.mark.parametrize("cp", [0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x2800],
                         ids=lambda c: "U+%04X" % c)
def test_non_whitespace_not_stripped(kiln, cp):
    w = chr(cp)
    r = one_file_recipe(name=w + "n" + w, path="/etc/p" + w)
    out = check_against_reference(kiln, r)
    plain = check_against_reference(kiln, one_file_recipe(name="n", path="/etc/p"))
    assert out["config_hash"] != plain["config_hash"]


def test_whitespace_only_name_strips_to_empty(kiln):
    check_against_reference(kiln, one_file_recipe(name=" \u3000\t\u0085 "))
    check_against_reference(kiln, one_file_recipe(name=""))


def test_equal_overlay_names_stable_both_orders(kiln):
    a = {"name": "same", "files": [{"path": "/a", "content": "A"}]}
    b = {"name": "same", "files": [{"path": "/b", "content": "B"}]}
    o1 = check_against_reference(kiln, {"overlays": [a, b]})
    o2 = check_against_reference(kiln, {"overlays": [b, a]})
    assert o1["config_hash"] != o2["config_hash"]


def test_overlays_sorted_by_name_as_given_not_stripped(kiln):
    # " z" sorts before "a" as given (U+0020 < 'a'), after it once stripped.
    a = {"name": "a", "files": [{"path": "/a"}]}
    z = {"name": " z", "files": [{"path": "/z"}]}
    o1 = check_against_reference(kiln, {"overlays": [a, z]})
    o2 = check_against_reference(kiln, {"overlays": [z, a]})
    assert o1["config_hash"] == o2["config_hash"]
    assert o1["config_canonical"].index('"z"') < o1["config_canonical"].index('"a"')


def test_names_differing_only_in_whitespace(kiln):
    # Equal after stripping, different as given: order follows the raw names.
    x = {"name": "\tn", "files": [{"path": "/x"}]}
    y = {"name": " n", "files": [{"path": "/y"}]}
    z = {"name": "n ", "files": [{"path": "/z"}]}
    outs = {check_against_reference(kiln, {"overlays": o})["config_hash"]
            for o in ([x, y, z], [z, y, x], [y, z, x])}
    assert len(outs) == 1


def test_overlay_names_sort_by_code_point_not_utf16(kiln):
    # U+FF61 < U+1F600 by code point, but UTF-16 order would put the
    # surrogate (0xD83D) first.
    a = {"name": "\uff61", "files": [{"path": "/a"}]}
    b = {"name": "\U0001F600", "files": [{"path": "/b"}]}
    o = check_against_reference(kiln, {"overlays": [b, a]})
    assert o["config_canonical"].index("\\uff61") < o["config_canonical"].index("\\ud83d")


def test_files_sorted_by_path_as_given_stable(kiln):
    f1 = {"path": "/etc/b", "content": "1"}
    f2 = {"path": " /etc/a", "content": "2"}  # sorts first as given
    f3 = {"path": "/etc/a", "content": "3"}
    for order in ([f1, f2, f3], [f3, f2, f1], [f2, f1, f3]):
        check_against_reference(kiln, {"overlays": [{"name": "o", "files": order}]})


def test_duplicate_paths_stable(kiln):
    a = {"path": "/etc/x", "content": "first"}
    b = {"path": "/etc/x", "content": "second"}
    o1 = check_against_reference(kiln, {"overlays": [{"name": "o", "files": [a, b]}]})
    o2 = check_against_reference(kiln, {"overlays": [{"name": "o", "files": [b, a]}]})
    assert o1["config_hash"] != o2["config_hash"]


def test_missing_content_is_empty_string(kiln):
    r1 = check_against_reference(kiln, one_file_recipe())
    r2 = check_against_reference(kiln, one_file_recipe(content=""))
    assert r1["config_hash"] == r2["config_hash"]
    assert hashlib.sha256(b"").hexdigest() in r1["config_canonical"]


def test_missing_mode_is_0644(kiln):
    r1 = check_against_reference(kiln, one_file_recipe())
    r2 = check_against_reference(kiln, one_file_recipe(mode="0644"))
    r3 = check_against_reference(kiln, one_file_recipe(mode="644"))
    assert r1["config_hash"] == r2["config_hash"]
    # the mode string as given: "644" is not "0644"
    assert r3["config_hash"] != r1["config_hash"]


def test_default_locale_timezone(kiln):
    r0 = check_against_reference(kiln, {})
    r1 = check_against_reference(kiln, {"locale": "en_US.UTF-8", "timezone": "UTC"})
    r2 = check_against_reference(kiln, {"locale": "C.UTF-8"})
    r3 = check_against_reference(kiln, {"timezone": "Etc/UTC"})
    assert r0["config_hash"] == r1["config_hash"]
    assert len({r0["config_hash"], r2["config_hash"], r3["config_hash"]}) == 3
    # {} is the third vector: packages and overlays default to []
    assert r0["config_hash"] == reference.ISSUE_VECTORS[2][1]


@pytest.mark.parametrize("content", ["\x00", "a\x00b", "\x00" * 100, "\x00\U0001F600\x00"],
                         ids=["nul", "inner", "many", "astral"])
def test_content_with_nul(kiln, content):
    out = check_against_reference(kiln, one_file_recipe(content=content))
    assert hashlib.sha256(content.encode()).hexdigest() in out["config_canonical"]


def test_name_with_nul(kiln):
    check_against_reference(kiln, one_file_recipe(name="a\x00b"))
    check_against_reference(kiln, {"overlays": [{"name": "a\x00b", "files": []},
                                                {"name": "a\x00a", "files": []},
                                                {"name": "a", "files": []}]})


def test_content_hash_is_of_utf8_bytes(kiln):
    s = "D\u00e9bian \u2603 \U0001F600"
    out = check_against_reference(kiln, one_file_recipe(content=s))
    assert hashlib.sha256(s.encode("utf-8")).hexdigest() in out["config_canonical"]
    # the same recipe spelled with \u escapes hashes the same
    out2 = check_against_reference(kiln, one_file_recipe(content=s),
                                   encode(one_file_recipe(content=s), ascii_only=True))
    assert out["config_hash"] == out2["config_hash"]


def test_packages_sorted_by_code_point(kiln):
    r = {"packages": ["z9", "a+", "a-", "a.", "a0", "aa", "0a", "a+", "lib++"]}
    out = check_against_reference(kiln, r)
    assert '"packages":["0a","a+","a-","a.","a0","aa","lib++","z9"]' in out["config_canonical"]


def test_empty_overlay(kiln):
    check_against_reference(kiln, {"overlays": [{"name": "e", "files": []}]})
    check_against_reference(kiln, {"overlays": [{"name": "e"}]})


def test_long_values(kiln):
    comp = "c" * 200
    path = "/" + "/".join([comp] * 20)
    check_against_reference(kiln, one_file_recipe(name="\u2603" * 1000, path=path,
                                                  content="\U0001F600" * 100000))


# ---- source_date_epoch ----------------------------------------------------------


@pytest.mark.parametrize("epoch", [0, 1, 1577836800, 4102444800, 253402300799])
def test_source_date_epoch_given_overrides(kiln, epoch):
    base = check_against_reference(kiln, one_file_recipe(content="x"))
    r = one_file_recipe(content="x")
    r["source_date_epoch"] = epoch
    out = check_against_reference(kiln, r)
    assert out["source_date_epoch"] == epoch
    assert out["source_date_epoch_given"] is True
    assert out["config_hash"] == base["config_hash"]


def test_derived_epoch_range(kiln):
    # derived epochs lie in [1577836800, 1577836800 + 347155199)
    for i in range(20):
        out = check_against_reference(kiln, one_file_recipe(content=str(i)))
        assert 1577836800 <= out["source_date_epoch"] < 1577836800 + 347155199


# ---- build_key invariants -------------------------------------------------------

BASE_RECIPE = {
    "name": "demo",
    "packages": ["vim", "git", "base"],
    "overlays": [{"name": "etc", "files": [{"path": "/etc/motd", "content": "hi\n", "mode": "0600"}]}],
    "steps": ["RUN echo hi", "ENV A=b"],
    "outputs": ["tar"],
}


def keys(kiln, recipe, *args):
    out = run_hash(kiln, encode(recipe), *args)
    return out["config_hash"], out["build_key"], out["source_date_epoch"]


def variant(**changes):
    r = json.loads(json.dumps(BASE_RECIPE))
    for k, v in changes.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return r


def test_key_order_package_order_duplicates_do_not_matter(kiln):
    base = keys(kiln, BASE_RECIPE)
    rev = dict(reversed(list(BASE_RECIPE.items())))
    rev["overlays"] = [dict(reversed(list(o.items()))) for o in rev["overlays"]]
    rev["overlays"][0]["files"] = [dict(reversed(list(f.items())))
                                   for f in rev["overlays"][0]["files"]]
    assert encode(rev) != encode(BASE_RECIPE)
    assert keys(kiln, rev) == base
    assert keys(kiln, variant(packages=["base", "vim", "git"])) == base
    assert keys(kiln, variant(packages=["git", "vim", "base", "vim", "git", "git"])) == base


def test_whitespace_in_json_does_not_matter(kiln):
    base = keys(kiln, BASE_RECIPE)
    out = run_hash(kiln, json.dumps(BASE_RECIPE, indent=4).encode())
    assert (out["config_hash"], out["build_key"], out["source_date_epoch"]) == base


def test_explicit_defaults_do_not_matter(kiln):
    base = keys(kiln, BASE_RECIPE)
    r = variant(base="debian/bookworm", locale="en_US.UTF-8", timezone="UTC")
    assert keys(kiln, r) == base


@pytest.mark.parametrize("change", [
    {"steps": ["RUN echo hi"]},
    {"steps": ["ENV A=b", "RUN echo hi"]},
    {"steps": ["RUN echo hi", "ENV A=c"]},
    {"steps": None},
    {"outputs": ["tar", "iso"]},
    {"outputs": ["squashfs"]},
    {"healthcheck": {"cmd": "true"}},
    {"source_date_epoch": 1700000000},
], ids=lambda c: json.dumps(c))
def test_build_key_changes_config_hash_does_not(kiln, change):
    h0, k0, e0 = keys(kiln, BASE_RECIPE)
    h1, k1, e1 = keys(kiln, variant(**change))
    assert h1 == h0
    assert k1 != k0
    if "source_date_epoch" in change:
        assert e1 == change["source_date_epoch"]
    else:
        assert e1 == e0


def test_healthcheck_fields_change_build_key(kiln):
    hc = {"cmd": "true", "interval_s": 30, "timeout_s": 30, "start_period_s": 0, "retries": 3}
    seen = {keys(kiln, variant(healthcheck=hc))[1]}
    for k, v in [("cmd", "false"), ("interval_s", 31), ("timeout_s", 29),
                 ("start_period_s", 5), ("retries", 4)]:
        seen.add(keys(kiln, variant(healthcheck=dict(hc, **{k: v})))[1])
    assert len(seen) == 6


def test_config_changes_change_both(kiln):
    h0, k0, _ = keys(kiln, BASE_RECIPE)
    for change in [{"packages": ["vim"]}, {"locale": "C.UTF-8"}, {"timezone": "Europe/Berlin"},
                   {"overlays": []}]:
        h1, k1, _ = keys(kiln, variant(**change))
        assert h1 != h0 and k1 != k0, change


def test_explicit_epoch_changes_build_key_only(kiln):
    h0, k0, e0 = keys(kiln, BASE_RECIPE)
    h1, k1, e1 = keys(kiln, variant(source_date_epoch=e0 + 1))
    assert (h1, e1) == (h0, e0 + 1) and k1 != k0
    h2, k2, e2 = keys(kiln, variant(source_date_epoch=e0 + 2))
    assert k2 not in (k0, k1)


def test_context_changes_build_key(kiln, tmp_path):
    a = tmp_path / "a.tar"
    b = tmp_path / "b.tar"
    a.write_bytes(b"context one")
    b.write_bytes(b"context two")
    h0, k0, e0 = keys(kiln, BASE_RECIPE)
    ha, ka, ea = keys(kiln, BASE_RECIPE, "--context", a)
    hb, kb, eb = keys(kiln, BASE_RECIPE, "--context", b)
    assert h0 == ha == hb and e0 == ea == eb
    assert len({k0, ka, kb}) == 3
    out = run_hash(kiln, encode(BASE_RECIPE), "--context", a)
    assert out["context_sha256"] == hashlib.sha256(b"context one").hexdigest()
    # same bytes under another name: same key
    c = tmp_path / "c.tar"
    c.write_bytes(b"context one")
    assert keys(kiln, BASE_RECIPE, "--context", c)[1] == ka


def test_context_missing_is_failure(kiln, tmp_path):
    p = kiln("hash", "--context", tmp_path / "nope.tar", "-", input=encode(BASE_RECIPE))
    assert p.returncode == 1
    assert b"nope.tar" in p.stderr


def test_build_key_stable_across_runs(kiln):
    assert keys(kiln, BASE_RECIPE) == keys(kiln, BASE_RECIPE)


# ---- randomized differential test ----------------------------------------------

SEED = 20240602


def n_random(kiln_bin):
    # A sanitizer build costs ~70 ms a process; its job is memory errors,
    # the breadth of the differential test comes from the normal build.
    with open(kiln_bin, "rb") as f:
        sanitized = b"__asan_init" in f.read()
    return 80 if sanitized else 300

# Pools chosen to hit every escaping class and the strip set's edges.
CHAR_POOL = (
    [chr(c) for c in range(0x20, 0x7F)] * 2
    + ESCAPES + C0_OTHER + ["\x7f"]
    + [chr(c) for c in range(0x80, 0x100)]
    + [chr(c) for c in STRIP_SPACE] * 3
    + ["\u180e", "\u200b", "\u2603", "\u2028", "\u2029", "\ufeff", "\uffff", "\ud7ff", "\ue000",
       "\U0001F600", "\U00010000", "\U0010FFFF", "\U0001D11E", "\u00e9", "\u4e2d"]
)
SPACE_POOL = [chr(c) for c in STRIP_SPACE]
PKG_POOL = ["base", "linux", "vim", "git", "emacs", "a0", "g++", "lib32z1", "python3.11",
            "x-y", "0ad", "zsh"]
LOCALES = ["en_US.UTF-8", "de_DE.UTF-8", "C.UTF-8", "fr_FR@euro", "C"]
TIMEZONES = ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"]


def rand_text(rng, lo, hi, pool=CHAR_POOL):
    return "".join(rng.choice(pool) for _ in range(rng.randint(lo, hi)))


def rand_pad(rng):
    return rand_text(rng, 0, 2, SPACE_POOL) if rng.random() < 0.4 else ""


def rand_component(rng, last):
    while True:
        c = rand_text(rng, 1, 8, [ch for ch in CHAR_POOL if ch not in "/\x00"])
        if c in (".", ".."):
            continue
        if last and reference.strip(c) == "":
            continue  # "/a/ " would strip to "/a/"
        if last and reference.strip("/" + c)[-1:] in ("", "/"):
            continue
        if last and reference.strip("x/" + c).endswith(("/.", "/..")):
            continue  # "/a/.. " strips to "/a/.."
        return c


def rand_path(rng):
    n = rng.randint(1, 4)
    comps = [rand_component(rng, i == n - 1) for i in range(n)]
    return rand_pad(rng) + "/" + "/".join(comps) + rand_pad(rng)


def rand_recipe(rng):
    r = {}
    if rng.random() < 0.8:
        r["packages"] = [rng.choice(PKG_POOL) for _ in range(rng.randint(0, 8))]
    if rng.random() < 0.85:
        names = [rand_text(rng, 0, 6) for _ in range(3)]
        ovs = []
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(names) if rng.random() < 0.5 else rand_text(rng, 0, 10)
            ov = {"name": rand_pad(rng) + name + rand_pad(rng)}
            paths = [rand_path(rng) for _ in range(3)]
            files = []
            for _ in range(rng.randint(0, 5)):
                f = {"path": rng.choice(paths) if rng.random() < 0.3 else rand_path(rng)}
                if rng.random() < 0.7:
                    f["content"] = rand_text(rng, 0, 40)
                if rng.random() < 0.5:
                    f["mode"] = "".join(rng.choice("01234567") for _ in range(rng.choice([3, 4])))
                files.append(f)
            if files or rng.random() < 0.7:
                ov["files"] = files
            ovs.append(ov)
        r["overlays"] = ovs
    if rng.random() < 0.4:
        r["locale"] = rng.choice(LOCALES)
    if rng.random() < 0.4:
        r["timezone"] = rng.choice(TIMEZONES)
    if rng.random() < 0.2:
        r["source_date_epoch"] = rng.randint(0, 253402300799)
    keys_ = list(r)
    rng.shuffle(keys_)
    return {k: r[k] for k in keys_}


def test_randomized_against_reference(kiln, kiln_bin):
    rng = random.Random(SEED)
    cases = []
    for _ in range(n_random(kiln_bin)):
        r = rand_recipe(rng)
        cases.append((r, encode(r, ascii_only=rng.random() < 0.5)))

    def one(case):
        r, data = case
        p = kiln("hash", "--canonical", "-", input=data)
        return r, data, p

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(one, cases))
    failures = []
    for r, data, p in results:
        if p.returncode != 0:
            failures.append(("rc", p.returncode, p.stderr, data))
            continue
        out = json.loads(p.stdout)
        h, e = reference.identity(r)
        if (out["config_canonical"], out["config_hash"], out["source_date_epoch"]) != \
                (reference.canonical_config(r), h, e):
            failures.append(("mismatch", data, out["config_canonical"],
                             reference.canonical_config(r)))
    assert not failures, failures[:3]
