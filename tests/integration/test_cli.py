"""The kiln command line as a user drives it: every subcommand, success and
each class of error, exit codes (0 ok, 1 failure, 2 usage) and the message
format "kiln: <file as given>: <json path>: <message>"."""
import datetime
import hashlib
import json
import os
import stat
import subprocess

import pytest

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def write(tmp_path, data, name="recipe.json"):
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def validate_error(kiln, tmp_path, data, name="recipe.json"):
    """Runs kiln validate NAME from tmp_path; returns stderr's single line."""
    write(tmp_path, data, name)
    p = kiln("validate", name, cwd=tmp_path)
    assert p.returncode == EXIT_FAIL, (p.returncode, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def ov(*files, name="o"):
    return {"overlays": [{"name": name, "files": list(files)}]}


# ---- validate: success ------------------------------------------------------


FULL = {
    "name": "full",
    "base": "debian/bookworm",
    "packages": ["vim", "git"],
    "overlays": [{"name": "etc", "files": [{"path": "/etc/motd", "content": "hi\n", "mode": "0600"}]}],
    "locale": "de_DE.UTF-8",
    "timezone": "Europe/Berlin",
    "steps": ["RUN apt-get install -y curl", "ENV A=b=c", "ENV EMPTY=", "USER nobody", "USER 1000",
              "WORKDIR /srv", "WORKDIR /", "COPY app /opt/app", "COPY . /srv/ctx",
              "COPY dir/sub\t/x"],
    "outputs": ["tar", "squashfs", "iso"],
    "resources": {"memory_mb": 4096, "cpus": 2, "timeout_s": 600, "warning_s": 300},
    "source_date_epoch": 1700000000,
    "healthcheck": {"cmd": "curl -f localhost", "interval_s": 10, "timeout_s": 5,
                    "start_period_s": 0, "retries": 3},
}


@pytest.mark.parametrize("recipe", [{}, {"packages": [], "overlays": []}, FULL],
                         ids=["empty", "vector3", "full"])
def test_validate_ok_prints_nothing(kiln, tmp_path, recipe):
    write(tmp_path, json.dumps(recipe))
    p = kiln("validate", tmp_path / "recipe.json")
    assert (p.returncode, p.stdout, p.stderr) == (EXIT_OK, "", "")


def test_validate_examples(kiln):
    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    if not os.path.isdir(root):
        pytest.skip("no examples/")
    names = [n for n in os.listdir(root) if n.endswith(".json")]
    assert names
    for n in names:
        kiln("validate", os.path.join(root, n), check=EXIT_OK)


def test_options_may_follow_the_recipe(kiln):
    ex = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    recipe, ctx = os.path.join(ex, "server.json"), os.path.join(ex, "server-context.tar.gz")
    before = kiln("hash", "--context", ctx, recipe, check=EXIT_OK).stdout
    after = kiln("hash", recipe, "--context", ctx, check=EXIT_OK).stdout
    plain = kiln("hash", recipe, check=EXIT_OK).stdout
    assert before == after and before != plain
    # "--" still ends the options: a recipe named like an option is a file.
    p = kiln("validate", "--", "--no-such-file.json")
    assert p.returncode != EXIT_OK and "--no-such-file.json" in p.stderr


def test_validate_stdin(kiln):
    p = kiln("validate", "-", input=json.dumps(FULL))
    assert (p.returncode, p.stdout, p.stderr) == (EXIT_OK, "", "")


def test_validate_stdin_error_names_stdin(kiln):
    p = kiln("validate", "-", input='{"foo":1}')
    assert p.returncode == EXIT_FAIL
    assert p.stderr == 'kiln: <stdin>: (root): unknown field "foo"\n'


# ---- validate: each class of error ----------------------------------------------

ERRORS = [
    # unknown fields
    ('{"foo":1}', '(root): unknown field "foo"'),
    ('{"name":"x","Packages":[]}', '(root): unknown field "Packages" (did you mean "packages"?)'),
    (ov({"path": "/a", "owner": "root"}), 'overlays[0].files[0]: unknown field "owner"'),
    ({"overlays": [{"name": "a", "bar": 1}]}, 'overlays[0]: unknown field "bar"'),
    ({"resources": {"widgets": 1}}, 'resources: unknown field "widgets"'),
    ({"healthcheck": {"cmd": "x", "every": 1}}, 'healthcheck: unknown field "every"'),
    # wrong types
    ({"packages": "vim"}, "packages: must be an array, not a string"),
    ({"packages": [1]}, "packages[0]: must be a string, not an integer"),
    ({"packages": ["vim", None]}, "packages[1]: must be a string, not null"),
    ({"overlays": {}}, "overlays: must be an array, not an object"),
    ({"overlays": [[]]}, "overlays[0]: must be an object, not an array"),
    ({"overlays": [{"name": 1}]}, "overlays[0].name: must be a string, not an integer"),
    (ov({"path": True}), "overlays[0].files[0].path: must be a string, not a boolean"),
    (ov({"path": "/a", "content": 1.5}),
     "overlays[0].files[0].content: must be a string, not a number with a fraction"),
    (ov({"path": "/a", "mode": 644}), "overlays[0].files[0].mode: must be a string, not an integer"),
    ({"name": 1}, "name: must be a string, not an integer"),
    ({"locale": []}, "locale: must be a string, not an array"),
    ({"steps": "RUN x"}, "steps: must be an array, not a string"),
    ({"steps": [{}]}, "steps[0]: must be a string, not an object"),
    ({"resources": []}, "resources: must be an object, not an array"),
    ({"resources": {"cpus": "4"}}, "resources.cpus: must be an integer, not a string"),
    ({"source_date_epoch": 1.5}, "source_date_epoch: must be an integer, not a number with a fraction"),
    ({"source_date_epoch": "1"}, "source_date_epoch: must be an integer, not a string"),
    ({"healthcheck": "true"}, "healthcheck: must be an object, not a string"),
    ("[]", "(root): must be an object, not an array"),
    ('"x"', None),  # jansson refuses non-container roots: a JSON error
    # out-of-range values
    ({"source_date_epoch": -1}, "source_date_epoch: must be between 0 and 253402300799, not -1"),
    ({"source_date_epoch": 253402300800},
     "source_date_epoch: must be between 0 and 253402300799, not 253402300800"),
    ({"resources": {"cpus": 0}}, "resources.cpus: must be between 1 and 1024, not 0"),
    ({"resources": {"memory_mb": 1}}, "resources.memory_mb: must be between 64 and 1048576, not 1"),
    ({"resources": {"timeout_s": 100, "warning_s": 100}},
     "resources.warning_s: must be less than timeout_s (100)"),
    ({"healthcheck": {"cmd": "x", "retries": 101}}, "healthcheck.retries: must be between 0 and 100, not 101"),
    ({"healthcheck": {"cmd": ""}}, "healthcheck.cmd: must not be empty"),
    ({"healthcheck": {}}, 'healthcheck: missing required field "cmd"'),
    ({"base": "ubuntu/noble"}, 'base: unsupported base "ubuntu/noble" (supported: debian/bookworm, busybox, archlinux)'),
    ({"locale": "en US"}, 'locale: must be a locale name like "en_US.UTF-8"'),
    ({"locale": ""}, 'locale: must be a locale name like "en_US.UTF-8"'),
    ({"timezone": "../etc/passwd"}, 'timezone: must be a tz database name like "Europe/Berlin"'),
    ({"timezone": "/UTC"}, 'timezone: must be a tz database name like "Europe/Berlin"'),
    # package names
    ({"packages": ["A"]}, 'packages[0]: "A" is not a valid Debian package name '
                          '(lowercase letters, digits, + . -; at least 2 characters)'),
    ({"packages": ["ok", "v"]}, 'packages[1]: "v" is not a valid Debian package name '
                                '(lowercase letters, digits, + . -; at least 2 characters)'),
    ({"packages": ["-vim"]}, None),
    ({"packages": ["+x"]}, None),
    ({"packages": ["vim_9"]}, None),
    ({"packages": ["Vim"]}, None),
    ({"packages": [""]}, None),
    ({"packages": ["vi m"]}, None),
    ({"packages": ["v\u00efm"]}, 'packages[0]: "v\\u00efm" is not a valid Debian package name '
                                 '(lowercase letters, digits, + . -; at least 2 characters)'),
    # paths
    (ov({"path": "etc/x"}), "overlays[0].files[0].path: must be absolute"),
    (ov({"path": "/ok"}, {"path": "relative"}), "overlays[0].files[1].path: must be absolute"),
    (ov({"path": "/a/../b"}), "overlays[0].files[0].path: must not contain . or .. components"),
    (ov({"path": "/a/.."}), "overlays[0].files[0].path: must not contain . or .. components"),
    (ov({"path": "/a/./b"}), "overlays[0].files[0].path: must not contain . or .. components"),
    (ov({"path": "/."}), "overlays[0].files[0].path: must not contain . or .. components"),
    (ov({"path": "/a//b"}), "overlays[0].files[0].path: must not contain //"),
    (ov({"path": "//a"}), "overlays[0].files[0].path: must not contain //"),
    (ov({"path": "/a/"}), "overlays[0].files[0].path: must not end with /"),
    (ov({"path": "/a/ "}), "overlays[0].files[0].path: must not end with /"),
    (ov({"path": "/"}), "overlays[0].files[0].path: must name a file, not /"),
    (ov({"path": ""}), "overlays[0].files[0].path: must not be empty"),
    (ov({"path": " \t"}), "overlays[0].files[0].path: must not be empty"),
    (ov({"path": "/a\u0000b"}), "overlays[0].files[0].path: must not contain NUL characters"),
    (ov({"path": "/" + "a" * 4096}), "overlays[0].files[0].path: longer than 4096 bytes"),
    (ov({"content": "x"}), 'overlays[0].files[0]: missing required field "path"'),
    # modes
    (ov({"path": "/a", "mode": "0888"}),
     'overlays[0].files[0].mode: must be an octal mode string of 3 or 4 digits like "0644"'),
    (ov({"path": "/a", "mode": "64"}), None),
    (ov({"path": "/a", "mode": "06444"}), None),
    (ov({"path": "/a", "mode": ""}), None),
    (ov({"path": "/a", "mode": "0x1ff"}), None),
    (ov({"path": "/a", "mode": "-644"}), None),
    (ov({"path": "/a", "mode": " 644"}), None),
    (ov({"path": "/a", "mode": "u+rw"}), None),
    # steps
    ({"steps": ["FROM debian"]},
     'steps[0]: unknown instruction "FROM" (expected RUN, ENV, USER, WORKDIR or COPY)'),
    ({"steps": ["RUN x", "run y"]},
     'steps[1]: unknown instruction "run" (expected RUN, ENV, USER, WORKDIR or COPY)'),
    ({"steps": [""]}, 'steps[0]: unknown instruction "" (expected RUN, ENV, USER, WORKDIR or COPY)'),
    ({"steps": ["RUN"]}, "steps[0]: RUN needs an argument"),
    ({"steps": ["RUN   "]}, "steps[0]: RUN needs an argument"),
    ({"steps": ["ENV FOO"]}, "steps[0]: ENV must be KEY=VALUE with KEY made of letters, digits and _"),
    ({"steps": ["ENV =x"]}, "steps[0]: ENV must be KEY=VALUE with KEY made of letters, digits and _"),
    ({"steps": ["ENV 1A=x"]}, "steps[0]: ENV must be KEY=VALUE with KEY made of letters, digits and _"),
    ({"steps": ["USER Root!"]}, "steps[0]: USER must be a user name or a numeric uid"),
    ({"steps": ["COPY /etc/passwd /x"]}, "steps[0]: COPY source must be relative to the context archive"),
    ({"steps": ["COPY ../secret /x"]}, "steps[0]: COPY source must not contain . or .. components"),
    ({"steps": ["COPY a/../../b /x"]}, "steps[0]: COPY source must not contain . or .. components"),
    ({"steps": ["COPY onlyone"]}, "steps[0]: COPY takes exactly two arguments: SRC DST"),
    ({"steps": ["COPY a b c"]}, "steps[0]: COPY takes exactly two arguments: SRC DST"),
    ({"steps": ["COPY a rel"]}, "steps[0]: COPY destination must be absolute"),
    ({"steps": ["WORKDIR srv"]}, "steps[0]: WORKDIR path must be absolute"),
    ({"steps": ["WORKDIR /a/../b"]}, "steps[0]: WORKDIR path must not contain . or .. components"),
    ({"steps": ["RUN a\u0000b"]}, "steps[0]: must not contain NUL characters"),
    # outputs
    ({"outputs": ["zip"]}, 'outputs[0]: unknown output (expected "tar", "squashfs", "iso", "ext4" or "oci")'),
    ({"outputs": ["tar", "TAR"]}, 'outputs[1]: unknown output (expected "tar", "squashfs", "iso", "ext4" or "oci")'),
    ({"outputs": ["tar", "iso", "tar"]}, 'outputs[2]: duplicate output "tar"'),
    ({"outputs": []}, 'outputs: must name at least one of "tar", "squashfs", "iso", "ext4", "oci"'),
    ({"outputs": ["tar", "squashfs", "iso", "ext4", "oci", "tar"]}, "outputs: more than 5 outputs"),
    # file-level errors: nesting and syntax
    ("", None),
    ('{"name":"x"} x', None),
    ('{"name":"x",}', None),
    ("{'name':'x'}", None),
]


def _ids(e):
    return (e if isinstance(e, str) else json.dumps(e))[:60]


@pytest.mark.parametrize("recipe,message", ERRORS, ids=[_ids(e[0]) for e in ERRORS])
def test_validate_error(kiln, tmp_path, recipe, message):
    data = recipe if isinstance(recipe, str) else json.dumps(recipe)
    line = validate_error(kiln, tmp_path, data)
    assert line.startswith("kiln: recipe.json: "), line
    if message is not None:
        assert line == "kiln: recipe.json: " + message
    # hash and profile refuse the same recipe with the same message
    p = kiln("hash", "recipe.json", cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr.strip()) == (EXIT_FAIL, "", line)


# One error of each class through `profile` too (each run costs a process;
# the sanitizer build makes that dear).
@pytest.mark.parametrize("recipe", [
    '{"foo":1}', {"packages": "vim"}, {"source_date_epoch": -1}, {"packages": ["A"]},
    ov({"path": "etc/x"}), ov({"path": "/a", "mode": "0888"}), {"steps": ["FROM debian"]},
    {"outputs": ["zip"]}, "{'name':'x'}", '{"packages":["a0"],"packages":[]}',
], ids=_ids)
def test_profile_refuses_invalid_recipe(kiln, tmp_path, recipe):
    data = recipe if isinstance(recipe, str) else json.dumps(recipe)
    line = validate_error(kiln, tmp_path, data)
    p = kiln("profile", "--format", "archiso", "recipe.json", "out", cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr.strip()) == (EXIT_FAIL, "", line)
    assert not (tmp_path / "out").exists()


def test_error_names_file_as_given(kiln, tmp_path):
    (tmp_path / "sub dir").mkdir()
    write(tmp_path / "sub dir", json.dumps(ov({"path": "/ok"}, {"path": "etc/x"})), "my recipe.json")
    p = kiln("validate", "sub dir/my recipe.json", cwd=tmp_path)
    assert p.returncode == EXIT_FAIL
    assert p.stderr == "kiln: sub dir/my recipe.json: overlays[0].files[1].path: must be absolute\n"
    p = kiln("validate", tmp_path / "sub dir" / "my recipe.json")
    assert p.stderr == "kiln: %s: overlays[0].files[1].path: must be absolute\n" % (
        tmp_path / "sub dir" / "my recipe.json")


def test_error_path_in_later_overlay(kiln, tmp_path):
    r = {"overlays": [{"name": "a", "files": [{"path": "/a"}]},
                      {"name": "b", "files": [{"path": "/b"}, {"path": "/c", "mode": "9"}]}]}
    line = validate_error(kiln, tmp_path, json.dumps(r))
    assert line.startswith("kiln: recipe.json: overlays[1].files[1].mode: ")


def test_unknown_field_with_odd_name_is_quoted(kiln, tmp_path):
    line = validate_error(kiln, tmp_path, json.dumps({"a\nb\u2603": 1}))
    assert line == 'kiln: recipe.json: (root): unknown field "a\\nb\\u2603"'


# Errors the JSON parser finds (duplicate keys, bad bytes, nesting, integers
# too big for 64 bits) still name the JSON path of the offending value.
JSON_LEVEL_ERRORS = [
    ('{"packages":["a0"],"packages":[]}', "packages: "),
    ('{"overlays":[{"name":"a","name":"b"}]}', "overlays[0].name: "),
    ('{"overlays":[{"name":"a","files":[{"path":"/a"},{"path":"/b","path":"/c"}]}]}',
     "overlays[0].files[1].path: "),
    ('{"resources":{"cpus":99999999999999999999999}}', "resources.cpus: "),
    ('{"source_date_epoch":-99999999999999999999999}', "source_date_epoch: "),
    (b'{"name":"\xff"}', "name: "),
    (b'{"name":"ok","overlays":[{"name":"a\xc0\xafb"}]}', "overlays[0].name: "),
    (b'{"steps":["RUN \xed\xa0\x80"]}', "steps[0]: "),  # UTF-8 encoded surrogate
    (b'{"steps":["RUN \xf4\x90\x80\x80"]}', "steps[0]: "),  # above U+10FFFF
    (b'{"steps":["RUN \xe2\x98"]}', "steps[0]: "),  # truncated
    ('{"overlays":[{"name":"a","files":[{"path":"/a","content":"\\ud800"}]}]}',
     "overlays[0].files[0].content: "),
    ('{"steps":' + "[" * 40 + "]" * 40 + "}", "steps"),
    ("[" * 100000 + "]" * 100000, ""),
]


@pytest.mark.parametrize("data,path", JSON_LEVEL_ERRORS,
                         ids=[repr(e[0])[:50] for e in JSON_LEVEL_ERRORS])
def test_json_level_errors_name_path(kiln, tmp_path, data, path):
    line = validate_error(kiln, tmp_path, data)
    assert line.startswith("kiln: recipe.json: " + path), line


def test_too_deep_nesting_is_refused(kiln, tmp_path):
    ok = json.dumps(ov({"path": "/a"}))  # depth 4
    validate_error(kiln, tmp_path, '{"x":' + "[" * 40 + "]" * 40 + "}")
    kiln("validate", write(tmp_path, ok), check=EXIT_OK)


def test_invalid_utf8_in_key(kiln, tmp_path):
    line = validate_error(kiln, tmp_path, b'{"na\xffme":"x"}')
    assert line.startswith("kiln: recipe.json: ")


def test_bom_and_trailing_garbage(kiln, tmp_path):
    validate_error(kiln, tmp_path, b"\xef\xbb\xbf{}")
    validate_error(kiln, tmp_path, b"{}\x00")


# ---- limits -------------------------------------------------------------------


def test_limit_packages(kiln, tmp_path):
    pk = ["p%d" % i for i in range(4096)]
    kiln("validate", write(tmp_path, json.dumps({"packages": pk})), check=EXIT_OK)
    line = validate_error(kiln, tmp_path, json.dumps({"packages": pk + ["zz"]}))
    assert line == "kiln: recipe.json: packages: more than 4096 packages"


def test_limit_files(kiln, tmp_path):
    def recipe(n1, n2):
        return {"overlays": [{"name": "a", "files": [{"path": "/a%d" % i} for i in range(n1)]},
                             {"name": "b", "files": [{"path": "/b%d" % i} for i in range(n2)]}]}

    kiln("validate", write(tmp_path, json.dumps(recipe(5000, 5000))), check=EXIT_OK)
    line = validate_error(kiln, tmp_path, json.dumps(recipe(5000, 5001)))
    assert line == "kiln: recipe.json: overlays[1].files: the recipe has more than 10000 overlay files in all"
    line = validate_error(kiln, tmp_path, json.dumps(recipe(10001, 0)))
    assert line.startswith("kiln: recipe.json: overlays[0].files: ")


def test_limit_recipe_size(kiln, tmp_path):
    limit = 1 << 20  # the one documented limit (docs/recipe.md), the server's too
    head = '{"overlays":[{"name":"a","files":[{"path":"/a","content":"'
    tail = '"}]}]}'
    exact = head + "x" * (limit - len(head) - len(tail)) + tail
    assert len(exact) == limit
    kiln("validate", write(tmp_path, exact), check=EXIT_OK)
    over = head + "x" * (limit - len(head) - len(tail) + 1) + tail
    line = validate_error(kiln, tmp_path, over)
    assert line == "kiln: recipe.json: larger than the limit of 1048576 bytes"
    # through a pipe, where the size is not known up front
    p = kiln("validate", "-", input=over.encode())
    assert p.returncode == EXIT_FAIL
    assert p.stderr == b"kiln: <stdin>: larger than the limit of 1048576 bytes\n"


def test_limit_path_length_exact(kiln, tmp_path):
    ok = "/" + "a" * 4095
    kiln("validate", write(tmp_path, json.dumps(ov({"path": ok}))), check=EXIT_OK)
    # surrounding whitespace does not count: it is stripped first
    kiln("validate", write(tmp_path, json.dumps(ov({"path": "  " + ok + "\t"}))), check=EXIT_OK)


# ---- file-level failures ---------------------------------------------------------


def test_missing_file(kiln, tmp_path):
    for cmd in (["validate"], ["hash"], ["profile", "--format", "archiso"]):
        args = cmd + ["nope.json"] + (["out"] if cmd[0] == "profile" else [])
        p = kiln(*args, cwd=tmp_path)
        assert p.returncode == EXIT_FAIL
        assert p.stderr == "kiln: nope.json: cannot open: No such file or directory\n"


def test_directory_as_file(kiln, tmp_path):
    (tmp_path / "d").mkdir()
    p = kiln("validate", "d", cwd=tmp_path)
    assert (p.returncode, p.stderr) == (EXIT_FAIL, "kiln: d: is a directory\n")


def test_unreadable_file(kiln, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    f = write(tmp_path, "{}")
    f.chmod(0)
    p = kiln("validate", f)
    assert p.returncode == EXIT_FAIL and "Permission denied" in p.stderr


# ---- usage errors and help ---------------------------------------------------------


@pytest.mark.parametrize("args", [
    [],
    ["frob"],
    ["--frob"],
    ["validate"],
    ["validate", "a.json", "b.json"],
    ["validate", "--bogus", "a.json"],
    ["hash"],
    ["hash", "a", "b"],
    ["hash", "--bogus", "a"],
    ["hash", "--context"],
    ["profile", "r.json", "out"],
    ["profile", "--format", "mkosi", "r.json", "out"],
    ["profile", "--format", "archiso", "r.json"],
    ["profile", "--format", "archiso", "r.json", "out", "extra"],
    ["profile", "--format"],
    ["help", "nope"],
    ["help", "validate", "hash"],
], ids=lambda a: " ".join(a) or "(none)")
def test_usage_errors_exit_2(kiln, tmp_path, args):
    p = kiln(*args, cwd=tmp_path)
    assert p.returncode == EXIT_USAGE, (p.returncode, p.stderr)
    assert p.stderr.strip()
    assert p.stdout == ""
    assert not (tmp_path / "out").exists()


def test_usage_error_message(kiln):
    p = kiln("validate")
    assert p.stderr == "kiln validate: expected exactly one RECIPE\nTry 'kiln help validate'.\n"
    p = kiln("frob")
    assert p.stderr == "kiln: unknown command 'frob'\nTry 'kiln help'.\n"
    p = kiln("profile", "--format", "mkosi", "r", "d")
    assert "unknown format 'mkosi' (supported: archiso)" in p.stderr


def test_version(kiln):
    p = kiln("--version", check=EXIT_OK)
    assert p.stdout.startswith("kiln ") and p.stdout.endswith("\n")
    version = p.stdout.split()[1]
    assert all(part.isdigit() for part in version.split(".")), version
    assert p.stderr == ""


def test_help_overview(kiln):
    for args in (["help"], ["--help"], ["-h"]):
        p = kiln(*args, check=EXIT_OK)
        for cmd in ("validate", "hash", "profile", "help"):
            assert "  " + cmd in p.stdout
        assert p.stderr == ""


@pytest.mark.parametrize("cmd", ["validate", "hash", "profile"])
def test_help_command(kiln, cmd):
    p = kiln("help", cmd, check=EXIT_OK)
    assert p.stdout.startswith("Usage: kiln " + cmd)
    assert kiln(cmd, "--help", check=EXIT_OK).stdout == p.stdout
    assert kiln(cmd, "-h", check=EXIT_OK).stdout == p.stdout


def test_help_help(kiln):
    assert kiln("help", "help", check=EXIT_OK).stdout.startswith("Usage: kiln help")


def test_no_command_prints_usage_on_stderr(kiln):
    p = kiln()
    assert p.returncode == EXIT_USAGE and p.stdout == "" and "Usage: kiln" in p.stderr


# ---- hash ------------------------------------------------------------------------


def test_hash_output_shape(kiln, tmp_path):
    p = kiln("hash", write(tmp_path, json.dumps(FULL)), check=EXIT_OK)
    assert p.stdout.endswith("}\n") and p.stdout.count("\n") == 1
    out = json.loads(p.stdout)
    assert {"config_hash", "source_date_epoch", "build_key"} <= set(out)
    assert out["source_date_epoch"] == 1700000000
    assert p.stderr == ""


def test_hash_stdin_equals_file(kiln, tmp_path):
    f = write(tmp_path, json.dumps(FULL))
    a = kiln("hash", f, check=EXIT_OK).stdout
    b = kiln("hash", "-", input=json.dumps(FULL), check=EXIT_OK).stdout
    assert a == b


def test_hash_canonical(kiln):
    p = kiln("hash", "--canonical", "-", input="{}", check=EXIT_OK)
    out = json.loads(p.stdout)
    assert out["config_canonical"] == \
        '{"locale":"en_US.UTF-8","overlays":[],"packages":[],"timezone":"UTC"}'
    assert hashlib.sha256(out["config_canonical"].encode()).hexdigest() == out["config_hash"]
    assert hashlib.sha256(out["build_canonical"].encode()).hexdigest() == out["build_key"]


# ---- profile --format archiso -----------------------------------------------------


def profile(kiln, tmp_path, recipe, out="out", check=EXIT_OK):
    f = write(tmp_path, json.dumps(recipe) if not isinstance(recipe, str) else recipe)
    p = kiln("profile", "--format", "archiso", f, tmp_path / out)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stderr)
    return p, tmp_path / out


def epoch_of(kiln, recipe):
    return json.loads(kiln("hash", "-", input=json.dumps(recipe), check=EXIT_OK).stdout)["source_date_epoch"]


def source_profiledef(path):
    script = ('declare -A file_permissions; source "$1"; '
              'printf "%s\\0" "$iso_name" "$iso_label" "$iso_version" "$arch" "$pacman_conf" '
              '"$airootfs_image_type" "${bootmodes[*]}" "${airootfs_image_tool_options[*]}" '
              '"${buildmodes[*]}"; '
              'for k in "${!file_permissions[@]}"; do printf "P %s=%s\\0" "$k" "${file_permissions[$k]}"; done')
    p = subprocess.run(["bash", "-c", script, "bash", str(path)], capture_output=True, text=True,
                       check=True)
    lines = p.stdout.split("\0")[:-1]
    fields = lines[:9]
    perms = dict(l[2:].split("=", 1) for l in lines[9:])
    return fields, perms


def test_profile_packages_sorted_distinct(kiln, tmp_path):
    _, out = profile(kiln, tmp_path, {"packages": ["vim", "git", "vim", "base", "a0", "git"]})
    assert (out / "packages.x86_64").read_text() == "a0\nbase\ngit\nvim\n"
    assert stat.S_IMODE(os.stat(out / "packages.x86_64").st_mode) == 0o644


@pytest.mark.parametrize("recipe", [{}, {"packages": []}], ids=["absent", "empty"])
def test_profile_packages_default(kiln, tmp_path, recipe):
    _, out = profile(kiln, tmp_path, recipe)
    assert (out / "packages.x86_64").read_text() == "base\nlinux\n"


def test_profile_profiledef(kiln, tmp_path):
    r = {"source_date_epoch": 1700000000}
    _, out = profile(kiln, tmp_path, r)
    text = (out / "profiledef.sh").read_text()
    subprocess.run(["bash", "-n", str(out / "profiledef.sh")], check=True)
    fields, perms = source_profiledef(out / "profiledef.sh")
    iso_name, label, version, arch, pconf, itype, boot, opts, build = fields
    assert iso_name == "kiln-custom"
    assert label == "KILN_202311"  # 2023-11-14T22:13:20Z
    assert version == "2023.11.14"
    assert arch == "x86_64" and pconf == "pacman.conf" and itype == "squashfs"
    assert boot.split() == ["bios.syslinux.mbr", "bios.syslinux.eltorito",
                            "uefi-x64.systemd-boot.esp", "uefi-x64.systemd-boot.eltorito"]
    o = opts.split()
    assert o[o.index("-comp") + 1] == "xz"
    assert " ".join(o[o.index("-comp") + 2:]) == "-Xbcj x86 -b 1M -Xdict-size 1M"
    assert build == "iso"
    assert perms == {"/etc/shadow": "0:0:0400", "/root": "0:0:750", "/etc/gshadow": "0:0:0400"}
    assert text.startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("epoch", [0, 951782400, 4102444799, 253402300799])
def test_profile_label_and_version_follow_epoch(kiln, tmp_path, epoch):
    _, out = profile(kiln, tmp_path, {"source_date_epoch": epoch})
    fields, _ = source_profiledef(out / "profiledef.sh")
    d = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    assert fields[1] == "KILN_%04d%02d" % (d.year, d.month)
    assert fields[2] == "%04d.%02d.%02d" % (d.year, d.month, d.day)


def test_profile_derived_epoch(kiln, tmp_path):
    r = {"packages": ["vim"]}
    e = epoch_of(kiln, r)
    _, out = profile(kiln, tmp_path, r)
    d = datetime.datetime.fromtimestamp(e, tz=datetime.timezone.utc)
    assert fields_version(out) == "%04d.%02d.%02d" % (d.year, d.month, d.day)


def fields_version(out):
    return source_profiledef(out / "profiledef.sh")[0][2]


def test_profile_pacman_conf(kiln, tmp_path):
    _, out = profile(kiln, tmp_path, {})
    text = (out / "pacman.conf").read_text()
    sections = [l.strip() for l in text.splitlines() if l.strip().startswith("[")]
    assert sections[:1] == ["[options]"]
    assert "[core]" in sections and "[extra]" in sections
    assert sections.index("[core]") < sections.index("[extra]")
    assert "SigLevel = Required DatabaseOptional" in text.splitlines()


def test_profile_airootfs_files(kiln, tmp_path):
    content = "Welcome \u2603\n\x00tail"
    r = {"overlays": [
        {"name": "b", "files": [{"path": "/etc/motd", "content": content, "mode": "0600"},
                                {"path": " /usr/local/bin/tool ", "content": "#!/bin/sh\n", "mode": "755"},
                                {"path": "/etc/empty"}]},
        {"name": "a", "files": [{"path": "/root/.profile", "content": "x", "mode": "0640"},
                                {"path": "/etc/sticky", "mode": "1777"}]},
    ]}
    _, out = profile(kiln, tmp_path, r)
    root = out / "airootfs"
    want = {"etc/motd": (content.encode(), 0o600), "usr/local/bin/tool": (b"#!/bin/sh\n", 0o755),
            "etc/empty": (b"", 0o644), "root/.profile": (b"x", 0o640), "etc/sticky": (b"", 0o1777)}
    for rel, (data, mode) in want.items():
        st = os.lstat(root / rel)
        assert stat.S_ISREG(st.st_mode), rel
        assert (root / rel).read_bytes() == data, rel
        assert stat.S_IMODE(st.st_mode) == mode, (rel, oct(st.st_mode))
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert got == sorted(want)
    # no temporary files left behind
    assert not [p for p in out.rglob("*") if p.name.startswith(".#")]
    _, perms = source_profiledef(out / "profiledef.sh")
    assert perms["/etc/motd"] == "0:0:0600"
    assert perms["/usr/local/bin/tool"] == "0:0:0755"


def test_profile_later_overlay_wins(kiln, tmp_path):
    r = {"overlays": [{"name": "b", "files": [{"path": "/etc/x", "content": "from b"}]},
                      {"name": "a", "files": [{"path": "/etc/x", "content": "from a"}]}]}
    _, out = profile(kiln, tmp_path, r)
    # identity order is a, b: b's file is written last
    assert (out / "airootfs/etc/x").read_text() == "from b"


def test_profile_hostile_path_is_quoted(kiln, tmp_path):
    marker = tmp_path / "pwned"
    evil = "/etc/$(touch %s)'\"`touch %s`\n;x" % (marker, marker)
    _, out = profile(kiln, tmp_path, ov({"path": evil, "mode": "0600"}))
    subprocess.run(["bash", "-n", str(out / "profiledef.sh")], check=True)
    _, perms = source_profiledef(out / "profiledef.sh")
    assert not marker.exists()
    assert perms[evil] == "0:0:0600"


def test_profile_rerun_overwrites(kiln, tmp_path):
    profile(kiln, tmp_path, ov({"path": "/etc/x", "content": "one"}))
    _, out = profile(kiln, tmp_path, ov({"path": "/etc/x", "content": "two", "mode": "0400"}))
    assert (out / "airootfs/etc/x").read_text() == "two"
    assert stat.S_IMODE(os.stat(out / "airootfs/etc/x").st_mode) == 0o400


def test_profile_from_stdin(kiln, tmp_path):
    p = kiln("profile", "--format", "archiso", "-", tmp_path / "out", input=json.dumps({"packages": ["vim"]}))
    assert p.returncode == EXIT_OK, p.stderr
    assert (tmp_path / "out/packages.x86_64").read_text() == "vim\n"


def test_profile_dir_is_a_file(kiln, tmp_path):
    (tmp_path / "out").write_text("keep")
    p, _ = profile(kiln, tmp_path, {}, check=EXIT_FAIL)
    assert p.stderr.startswith("kiln: ")
    assert (tmp_path / "out").read_text() == "keep"


def test_profile_parent_missing(kiln, tmp_path):
    p, _ = profile(kiln, tmp_path, {}, out="no/such/out", check=EXIT_FAIL)
    assert "no/such/out" in p.stderr


def test_profile_file_vs_directory_conflict(kiln, tmp_path):
    r = {"overlays": [{"name": "a", "files": [{"path": "/etc/x", "content": "f"}]},
                      {"name": "b", "files": [{"path": "/etc/x/y", "content": "g"}]}]}
    p, _ = profile(kiln, tmp_path, r, check=EXIT_FAIL)
    assert "airootfs/etc/x/y" in p.stderr


# ---- profile: nothing escapes DIR ----------------------------------------------


def snapshot(top, skip):
    """Every path under top except skip, with type, mode and content."""
    snap = {}
    skip = os.path.abspath(skip)

    def skipped(p):
        p = os.path.abspath(p)
        return p == skip or p.startswith(skip + os.sep)

    for dirpath, dirnames, filenames in os.walk(top):
        if skipped(dirpath):
            continue
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if skipped(p):
                continue
            st = os.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                data = open(p, "rb").read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            snap[p] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), data)
    return snap


ESCAPE_RECIPE = ov({"path": "/etc/motd", "content": "owned"},
                   {"path": "/passwd", "content": "owned"},
                   {"path": "/sentinel", "content": "owned"})


def assert_no_escape(kiln, tmp_path, setup):
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "sentinel").write_text("original")
    (outside / "etc" / "motd").write_text("original")
    out = tmp_path / "out"
    out.mkdir()
    setup(out, outside)
    recipe = write(tmp_path, json.dumps(ESCAPE_RECIPE))
    before = snapshot(tmp_path, out)
    assert len(before) >= 5
    p = kiln("profile", "--format", "archiso", recipe, out)
    assert p.returncode in (EXIT_OK, EXIT_FAIL), p.stderr
    after = snapshot(tmp_path, out)
    assert after == before
    assert (outside / "sentinel").read_text() == "original"
    return p, out


def test_escape_airootfs_symlink_absolute(kiln, tmp_path):
    p, out = assert_no_escape(kiln, tmp_path,
                              lambda out, outside: os.symlink(str(outside), out / "airootfs"))


def test_escape_airootfs_symlink_relative(kiln, tmp_path):
    assert_no_escape(kiln, tmp_path, lambda out, outside: os.symlink("../outside", out / "airootfs"))


def test_escape_airootfs_etc_symlink_absolute(kiln, tmp_path):
    def setup(out, outside):
        (out / "airootfs").mkdir()
        os.symlink(str(outside / "etc"), out / "airootfs" / "etc")

    p, out = assert_no_escape(kiln, tmp_path, setup)
    if p.returncode == EXIT_OK:
        # the link resolved inside DIR: the file exists under airootfs only
        assert (out / "airootfs" / "sentinel").read_text() == "owned"


def test_escape_airootfs_etc_symlink_dotdot(kiln, tmp_path):
    def setup(out, outside):
        (out / "airootfs").mkdir()
        os.symlink("../../outside/etc", out / "airootfs" / "etc")

    assert_no_escape(kiln, tmp_path, setup)


def test_escape_symlink_at_file_path(kiln, tmp_path):
    def setup(out, outside):
        (out / "airootfs" / "etc").mkdir(parents=True)
        os.symlink(str(outside / "etc" / "motd"), out / "airootfs" / "etc" / "motd")
        os.symlink(str(outside / "sentinel"), out / "airootfs" / "sentinel")

    p, out = assert_no_escape(kiln, tmp_path, setup)
    assert p.returncode == EXIT_OK, p.stderr
    for rel in ("etc/motd", "sentinel"):
        st = os.lstat(out / "airootfs" / rel)
        assert stat.S_ISREG(st.st_mode), rel  # the link was replaced, not followed
        assert (out / "airootfs" / rel).read_text() == "owned"


def test_escape_top_level_file_symlinks(kiln, tmp_path):
    def setup(out, outside):
        os.symlink(str(outside / "sentinel"), out / "packages.x86_64")
        os.symlink(str(outside / "etc" / "motd"), out / "profiledef.sh")
        os.symlink("../outside/sentinel", out / "pacman.conf")

    p, out = assert_no_escape(kiln, tmp_path, setup)
    assert p.returncode == EXIT_OK, p.stderr
    assert not os.path.islink(out / "packages.x86_64")
    assert (out / "packages.x86_64").read_text() == "base\nlinux\n"


def test_escape_magic_link(kiln, tmp_path):
    def setup(out, outside):
        (out / "airootfs").mkdir()
        os.symlink("/proc/self/cwd", out / "airootfs" / "etc")

    assert_no_escape(kiln, tmp_path, setup)
