"""Validation as a user meets it (issue 14): every error of a recipe, one a
line and capped, not only the first; "did you mean" for a misspelt field;
JSON syntax errors with columns counted from 1 in the same words from
`kiln validate` and from the server; a time zone the busybox base cannot
have is refused at validate. The real binary and a real server on loopback."""
import json
import subprocess

import requests

from test_api import assert_error, serve  # noqa: F401

MANY = {"name": "x", "pakages": [], "steps": [1, "FROB"], "outputs": "tar",
        "base": "busybox", "timezone": "Europe/Berlin", "resources": {"cpu": 1}}
MANY_ERRORS = [
    '(root): unknown field "pakages" (did you mean "packages"?)',
    "steps[0]: must be a string, not an integer",
    'steps[1]: unknown instruction "FROB" (expected RUN, ENV, USER, WORKDIR or COPY)',
    "outputs: must be an array, not a string",
    'resources: unknown field "cpu" (did you mean "cpus"?)',
    'timezone: base "busybox" has no time zone data: only "UTC" (use base '
    '"debian/bookworm" with the tzdata package for "Europe/Berlin")',
]


def validate(kiln_bin, tmp_path, text):
    p = tmp_path / "r.json"
    p.write_text(text)
    r = subprocess.run([kiln_bin, "validate", str(p)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, r.stderr
    prefix = f"kiln: {p}: "
    lines = r.stderr.splitlines()
    assert all(l.startswith(prefix) for l in lines), r.stderr
    return [l[len(prefix):] for l in lines]


def post(s, text):
    return requests.post(s.url("/api/v1/builds"), data=text,
                         headers={"Content-Type": "application/json"})


def test_every_error_listed_in_cli_and_server(kiln_bin, serve, tmp_path):
    got = validate(kiln_bin, tmp_path, json.dumps(MANY))
    assert sorted(got) == sorted(MANY_ERRORS), got
    s = serve("--no-auth", "--no-workers")
    msg = assert_error(post(s, json.dumps(MANY)), 422, "invalid_recipe")
    assert msg.split("\n") == got


def test_errors_are_capped(kiln_bin, tmp_path):
    r = {"base": "busybox", "steps": [f"FROB {i}" for i in range(30)]}
    got = validate(kiln_bin, tmp_path, json.dumps(r))
    assert len(got) == 21, got
    assert got[:20] == [f'steps[{i}]: unknown instruction "FROB" (expected RUN, ENV, USER, '
                        "WORKDIR or COPY)" for i in range(20)]
    assert got[20] == "(and 10 more errors)"


def test_one_error_keeps_its_one_line(kiln_bin, tmp_path):
    assert validate(kiln_bin, tmp_path, '{"name": "x", "outputs": []}') == [
        'outputs: must name at least one of "tar", "squashfs", "iso", "ext4", "oci"']


def test_busybox_utc_is_fine(kiln_bin, tmp_path):
    for tz in ("UTC", "Etc/UTC"):
        p = tmp_path / "ok.json"
        p.write_text(json.dumps({"base": "busybox", "timezone": tz}))
        r = subprocess.run([kiln_bin, "validate", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_json_errors_same_words_columns_from_1(kiln_bin, serve, tmp_path):
    s = serve("--no-auth", "--no-workers")
    cases = [
        ("\n\n", "line 3, column 1: invalid JSON: '[' or '{' expected near end of file"),
        ('{"a":}', "line 1, column 6: invalid JSON: unexpected token near '}'"),
        ('{\n  "name": x\n}', "name: line 2, column 11: invalid JSON: invalid token near 'x'"),
    ]
    for text, words in cases:
        assert validate(kiln_bin, tmp_path, text) == [words]
        msg = assert_error(post(s, text), 400, "invalid_json")
        assert msg == words, (text, msg)


def test_one_recipe_size_limit_in_cli_and_server(kiln_bin, serve, tmp_path):
    # The documented 1 MiB (docs/recipe.md): what validates locally is
    # accepted by the server, what does not is refused by both.
    limit = 1 << 20
    head = '{"base":"busybox","overlays":[{"name":"a","files":[{"path":"/a","content":"'
    tail = '"}]}]}'
    exact = head + "x" * (limit - len(head) - len(tail)) + tail
    over = head + "x" * (limit - len(head) - len(tail) + 1) + tail
    p = tmp_path / "exact.json"
    p.write_text(exact)
    assert subprocess.run([kiln_bin, "validate", str(p)]).returncode == 0
    s = serve("--no-auth", "--no-workers")
    r = post(s, exact)
    assert r.status_code == 202, r.text[:500]
    assert validate(kiln_bin, tmp_path, over) == ["larger than the limit of 1048576 bytes"]
    assert_error(post(s, over), 413, "payload_too_large")
