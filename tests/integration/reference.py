"""An independent implementation of kiln's recipe identity (issue 2, "Identity").

Written from the specification text, not from the C code, so the differential
tests in test_identity.py compare two readings of the same spec. Only the
identity is modelled here (config_hash and source_date_epoch); validation is
the C parser's job and the tests feed this module valid recipes only.

Usage: reference.identity(recipe_dict) -> (config_hash, source_date_epoch).
"""
import hashlib
import json

DEFAULT_LOCALE = "en_US.UTF-8"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_MODE = "0644"

EPOCH_BASE = 1577836800  # 2020-01-01T00:00:00Z
EPOCH_SPAN = 347155199

# "every code point with the Unicode White_Space property plus U+001C..U+001F
# (exactly what Python's str.strip() removes)". Listed explicitly so a change
# in Python's Unicode tables shows up as a test failure instead of silently
# moving the reference.
STRIP_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def escape_string(s):
    """The spec's string serialization, written out rule by rule.

    \\" \\\\ \\n \\r \\t \\b \\f; every other code point below U+0020 and every
    code point from U+007F up as lowercase \\uXXXX; above U+FFFF as a UTF-16
    surrogate pair; everything else literal."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif cp < 0x20 or 0x7F <= cp <= 0xFFFF:
            out.append("\\u%04x" % cp)
        elif cp > 0xFFFF:
            v = cp - 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (v >> 10), 0xDC00 | (v & 0x3FF)))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def serialize(v):
    """Canonical JSON: sorted keys, ',' and ':' without spaces."""
    if isinstance(v, str):
        return escape_string(v)
    if isinstance(v, list):
        return "[" + ",".join(serialize(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(escape_string(k) + ":" + serialize(v[k]) for k in sorted(v)) + "}"
    raise TypeError(type(v))


def strip(s):
    i, j = 0, len(s)
    while i < j and ord(s[i]) in STRIP_SPACE:
        i += 1
    while j > i and ord(s[j - 1]) in STRIP_SPACE:
        j -= 1
    return s[i:j]


def content_hash(content):
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def canonical_config(recipe):
    """The canonical JSON text whose SHA-256 is config_hash."""
    overlays = []
    # sorted() is stable and compares str by code point: "in order of their
    # name as given (before stripping), stable for equal names".
    for ov in sorted(recipe.get("overlays", []), key=lambda o: o["name"]):
        files = []
        for f in sorted(ov.get("files", []), key=lambda f: f["path"]):
            files.append({
                "content_hash": content_hash(f.get("content", "")),
                "mode": f.get("mode", DEFAULT_MODE),
                "path": strip(f["path"]),
            })
        overlays.append({"files": files, "name": strip(ov["name"])})
    doc = {
        "locale": recipe.get("locale", DEFAULT_LOCALE),
        "overlays": overlays,
        "packages": sorted(set(recipe.get("packages", []))),
        "timezone": recipe.get("timezone", DEFAULT_TIMEZONE),
    }
    return serialize(doc)


def canonical_config_json_dumps(recipe):
    """The same document through json.dumps, to cross-check serialize()."""
    return json.dumps(json.loads(canonical_config(recipe)), sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True)


def config_hash(recipe):
    return hashlib.sha256(canonical_config(recipe).encode("ascii")).hexdigest()


def derive_epoch(chash):
    return EPOCH_BASE + int(chash[:16], 16) % EPOCH_SPAN


def identity(recipe):
    """(config_hash, source_date_epoch) of a valid recipe dict."""
    h = config_hash(recipe)
    if "source_date_epoch" in recipe:
        return h, recipe["source_date_epoch"]
    return h, derive_epoch(h)


# The vectors of issue 2: recipe JSON text -> (config_hash, source_date_epoch).
ISSUE_VECTORS = [
    ('{"packages":["vim","git","base"],"overlays":[{"name":"test","files":[{"path":"/etc/test","content":"hello"}]}]}',
     "81c1fb3290249d84b0ae72bc346acab877caf8085b121a2a11454a1b5089168a", 1830123928),
    ('{"packages":["base","git","vim"],"overlays":[]}',
     "f1b96187c6de1522c5ad4a7835a07c26268f581e2693370058df60c799f086b1", 1913431986),
    ('{"packages":[],"overlays":[]}',
     "472d84c01788a2af4582f68afb3beb499c9c16f497407662a45fdf06b2c9988f", 1723636099),
    ('{"packages":["vim","vim","emacs"],"overlays":[{"name":" motd ","files":[{"path":" /etc/motd","content":"Welcome\\n","mode":"0600"},{"path":"/etc/issue","content":"Débian ☃"}]}],"locale":"de_DE.UTF-8","timezone":"Europe/Berlin"}',
     "c2df80cfb5272257dbcd4f72886b3c86f8cdd3408ef7af317e4737af1a5cffc6", 1626659332),
]

if __name__ == "__main__":
    for text, h, e in ISSUE_VECTORS:
        got = identity(json.loads(text))
        print("ok " if got == (h, e) else "BAD", got)
