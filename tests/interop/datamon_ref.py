#!/usr/bin/env python3
"""datamon_ref: an independent reference implementation of the datamon bucket format.

It works on a "file store": ROOT/<bucket>/<key>, where an object key `a/b/c` in
bucket B is the file ROOT/B/a/b/c.  The config bucket is ROOT/config and context
C is ROOT/config/contexts/C/context.yaml (name, wal, readlog, blob, metadata,
vmetadata, version).

Keys are BLAKE2b-512 in tree mode (fanout 0, depth 2, leaf_size L, inner 64):
full leaves get node_offset 1..N, a trailing partial leaf after N full leaves
gets node_offset N and last_node; a file shorter than one leaf is one leaf with
offset 0 and last_node; the root key hashes the concatenated raw leaf keys with
node_offset 0, node_depth 1, last_node.  The blob bucket holds each leaf (named
by its hex key) and a root object (leaf keys || root key) named by the root key.

Subcommands:
  selftest                  reference vectors and the leaf-offset rule
  keys FILE [--leaf-size L] JSON {"size", "leaves", "root"} of a file
  write ...                 upload DIR as a bundle, print the bundle id
  verify ...                check a bundle written by someone else against DIR

Only the standard library and PyYAML are used.  Expected failures print one
line `datamon_ref: <what is wrong>` on stderr and exit with status 1.
"""

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import re
import secrets
import stat
import sys
import tempfile
import time

import yaml

DEFAULT_LEAF_SIZE = 2 * 1024 * 1024
KEY_SIZE = 64
MAX_ENTRIES = 1000
BUNDLE_VERSION = 2
CONTRIBUTOR = {"name": "datamon-ref", "email": "datamon-ref@example.com"}
CONTEXT_FIELDS = ["name", "wal", "readlog", "blob", "metadata", "vmetadata", "version"]
ENTRY_FIELDS = ["hash", "name", "mode", "size", "timestamp"]
LABEL_FIELDS = ["name", "id", "timestamp", "contributors"]
HEX_KEY = re.compile(r"[0-9a-f]{128}\Z")
REPO_NAME = re.compile(r"[A-Za-z0-9-]+\Z")
LABEL_NAME = re.compile(r"[\w-]+\Z")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z")
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KSUID_EPOCH = 1400000000


class RefError(Exception):
    """An expected failure, reported as one line with exit status 1."""


# --------------------------------------------------------------------------- keys

def blake(data, leaf_size, node_offset, node_depth, last):
    return hashlib.blake2b(data, digest_size=KEY_SIZE, fanout=0, depth=2, leaf_size=leaf_size,
                           node_offset=node_offset, node_depth=node_depth,
                           inner_size=KEY_SIZE, last_node=last).digest()


def leaf_key(data, leaf_size, node_offset, last):
    return blake(data, leaf_size, node_offset, 0, last)


def root_key(leaf_keys, leaf_size):
    return blake(b"".join(leaf_keys), leaf_size, 0, 1, True)


def check_leaf_size(leaf_size, what="leaf size"):
    if isinstance(leaf_size, bool) or not isinstance(leaf_size, int) or not 0 < leaf_size < 2**32:
        raise RefError(f"{what} must be an integer in 1..2^32-1, got {leaf_size!r}")


def iter_leaves(fobj, leaf_size):
    """Yield (data, node_offset, last_node) for each leaf of a binary stream (datamon's quirk)."""
    full = 0
    while True:
        data = bytearray()
        while len(data) < leaf_size:
            chunk = fobj.read(leaf_size - len(data))
            if not chunk:
                break
            data += chunk
        if not data:
            return
        if len(data) == leaf_size:
            full += 1
            yield bytes(data), full, False
        else:
            yield bytes(data), full, True    # partial leaf: same offset as the previous full one
            return


def stream_keys(fobj, leaf_size, on_leaf=None):
    """Return (size, [leaf keys], root key); on_leaf(key, data, offset, last) is called per leaf."""
    size, leaves = 0, []
    for data, offset, last in iter_leaves(fobj, leaf_size):
        key = leaf_key(data, leaf_size, offset, last)
        if on_leaf:
            on_leaf(key, data, offset, last)
        leaves.append(key)
        size += len(data)
    return size, leaves, root_key(leaves, leaf_size)


# ------------------------------------------------------------- ids and timestamps

def new_ksuid(unix_seconds=None, payload=None):
    ts = int(time.time() if unix_seconds is None else unix_seconds) - KSUID_EPOCH
    raw = ts.to_bytes(4, "big") + (secrets.token_bytes(16) if payload is None else payload)
    n, out = int.from_bytes(raw, "big"), ""
    while n:
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out.rjust(27, "0")


def is_ksuid(s):
    if not isinstance(s, str) or len(s) != 27 or any(c not in B62 for c in s):
        return False
    n = 0
    for c in s:
        n = n * 62 + B62.index(c)
    return n < 2**160


def rfc3339(ns):
    """RFC 3339 UTC with trailing zeros of the fraction trimmed (Go's RFC3339Nano)."""
    sec, frac = divmod(ns, 10**9)
    base = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac_s = f"{frac:09d}".rstrip("0")
    return base + ("." + frac_s if frac_s else "") + "Z"


def check_timestamp(value, what):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() != dt.timedelta(0):
            raise RefError(f"{what}: timestamp {value} is not UTC")
    elif not isinstance(value, str) or not RFC3339.match(value) or \
            not value.endswith(("Z", "+00:00", "-00:00")):
        raise RefError(f"{what}: timestamp {value!r} is not an RFC 3339 UTC time")


# --------------------------------------------------------------------------- YAML

class Timestamp(str):
    """A string emitted as a plain YAML timestamp (as Go's yaml writes time.Time)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    Timestamp, lambda d, v: d.represent_scalar("tag:yaml.org,2002:timestamp", str(v)))


def dump_yaml(doc):
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 30).encode("utf-8")


class _Loader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys; dict order is the document's key order."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(data, what):
    try:
        doc = yaml.load(data, Loader=_Loader)
    except (yaml.YAMLError, TypeError, UnicodeDecodeError) as exc:
        raise RefError(f"{what}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise RefError(f"{what}: not a YAML mapping")
    return doc


def check_key_order(doc, expected, what):
    if list(doc) != expected:
        raise RefError(f"{what}: keys are {list(doc)}, expected exactly {expected}")


def check_contributors(value, what):
    if not isinstance(value, list):
        raise RefError(f"{what}: contributors is not a list")
    for c in value:
        if not isinstance(c, dict) or sorted(c) != ["email", "name"] or \
                not all(isinstance(v, str) for v in c.values()):
            raise RefError(f"{what}: contributor {c!r} is not {{name, email}} strings")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# -------------------------------------------------------------------------- store

class FileStore:
    """Buckets are directories of ROOT; object key a/b/c is the file ROOT/<bucket>/a/b/c."""

    def __init__(self, root):
        self.root = root

    def path(self, bucket, key=""):
        parts = [bucket] + (key.split("/") if key else [])
        if any(p in ("", ".", "..") or os.sep in p for p in parts):
            raise RefError(f"invalid object name {bucket}:{key}")
        return os.path.join(self.root, *parts)

    def has_bucket(self, bucket):
        return os.path.isdir(self.path(bucket))

    def get(self, bucket, key):
        try:
            with open(self.path(bucket, key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def size(self, bucket, key):
        try:
            return os.stat(self.path(bucket, key)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put(self, bucket, key, data, create_only):
        """Write atomically; create_only fails if the object exists (does-not-exist precondition)."""
        final = self.path(bucket, key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = os.path.join(os.path.dirname(final),
                           f".{os.path.basename(final)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            if create_only:
                os.link(tmp, final)
            else:
                os.replace(tmp, final)
        except FileExistsError:
            raise RefError(f"object {bucket}:{key} already exists") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def list_dir(self, bucket, prefix):
        try:
            return sorted(os.listdir(self.path(bucket, prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []


def load_context(store, name, create=False):
    key = f"contexts/{name}/context.yaml"
    raw = store.get("config", key)
    if raw is None:
        if not create:
            raise RefError(f"context {name!r} not found (config:{key})")
        ctx = {"name": name, "wal": f"{name}-wal", "readlog": f"{name}-read-log",
               "blob": f"{name}-blob", "metadata": f"{name}-metadata",
               "vmetadata": f"{name}-v-metadata", "version": 1}
        store.put("config", key, dump_yaml(ctx), create_only=True)
    else:
        ctx = load_yaml(raw, f"config:{key}")
        for field in CONTEXT_FIELDS[:-1]:
            if not isinstance(ctx.get(field), str) or not ctx[field]:
                raise RefError(f"config:{key}: field {field!r} missing or not a string")
    for field in ("blob", "metadata", "vmetadata", "wal", "readlog"):
        if create:
            os.makedirs(store.path(ctx[field]), exist_ok=True)
        if field in ("blob", "metadata", "vmetadata") and not store.has_bucket(ctx[field]):
            raise RefError(f"bucket {ctx[field]!r} ({field}) does not exist")
    return ctx


def list_source(top):
    """Regular files under top (symlinks and directories skipped), as sorted (name, path)."""
    if not os.path.isdir(top):
        raise RefError(f"source {top!r} is not a directory")
    files = []
    for dirpath, _dirs, names in os.walk(top, followlinks=False):
        for n in names:
            path = os.path.join(dirpath, n)
            if stat.S_ISREG(os.lstat(path).st_mode):
                rel = os.path.relpath(path, top).replace(os.sep, "/")
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise RefError(f"file name {rel!r} is not valid UTF-8") from None
                files.append((rel, path))
    return sorted(files)


# -------------------------------------------------------------------------- write

def upload_file(store, blob, path, leaf_size):
    def put_if_absent(key, data):
        have = store.size(blob, key)
        if have is None:
            store.put(blob, key, data, create_only=False)
        elif have != len(data):
            raise RefError(f"blob {key} exists with size {have}, expected {len(data)}")

    expected = os.stat(path).st_size
    with open(path, "rb") as f:
        size, leaves, root = stream_keys(f, leaf_size, lambda k, d, *_: put_if_absent(k.hex(), d))
    if size != expected:
        raise RefError(f"{path} changed size while being read")
    put_if_absent(root.hex(), b"".join(leaves) + root)
    return size, root


def do_write(a):
    check_leaf_size(a.leaf_size)
    if not REPO_NAME.match(a.repo):
        raise RefError(f"invalid repo name {a.repo!r}")
    if a.label is not None and not LABEL_NAME.match(a.label):
        raise RefError(f"invalid label name {a.label!r}")
    if not 1 <= a.files_per_doc <= MAX_ENTRIES:
        raise RefError(f"--files-per-doc must be in 1..{MAX_ENTRIES}")
    store = FileStore(a.store)
    ctx = load_context(store, a.context, create=a.create_context)
    blob, meta, vmeta = ctx["blob"], ctx["metadata"], ctx["vmetadata"]
    files = list_source(a.source)
    now = Timestamp(rfc3339(time.time_ns()))

    repo_key = f"repos/{a.repo}/repo.yaml"
    if store.get(meta, repo_key) is None:
        repo = {"name": a.repo, "description": f"repo {a.repo}", "timestamp": now,
                "contributor": dict(CONTRIBUTOR)}
        store.put(meta, repo_key, dump_yaml(repo), create_only=True)

    bundle_id = new_ksuid()
    prefix = f"bundles/{a.repo}/{bundle_id}"
    if store.list_dir(meta, prefix):
        raise RefError(f"bundle {bundle_id} already exists")

    entries = []                                  # 1. blobs
    for name, path in files:
        size, root = upload_file(store, blob, path, a.leaf_size)
        entries.append({"hash": root.hex(), "name": name, "mode": 0, "size": size,
                        "timestamp": Timestamp(rfc3339(os.stat(path).st_mtime_ns))})
    count = 0                                     # 2. bundle-files documents
    for start in range(0, len(entries), a.files_per_doc):
        doc = {"BundleEntries": entries[start:start + a.files_per_doc]}
        store.put(meta, f"{prefix}/bundle-files-{count}.yaml", dump_yaml(doc), create_only=True)
        count += 1
    bundle = {"leafSize": a.leaf_size, "id": bundle_id, "message": a.message,
              "timestamp": now, "contributors": [dict(CONTRIBUTOR)], "count": count,
              "version": BUNDLE_VERSION, "deduplication": "blake"}
    store.put(meta, f"{prefix}/bundle.yaml", dump_yaml(bundle), create_only=True)  # 3. commit
    if a.label is not None:                       # 4. label (overwrite)
        label = {"name": a.label, "id": bundle_id, "timestamp": now,
                 "contributors": [dict(CONTRIBUTOR)]}
        store.put(vmeta, f"labels/{a.repo}/{a.label}/label.yaml", dump_yaml(label),
                  create_only=False)
    return bundle_id


# ------------------------------------------------------------------------- verify

def check_bundle_descriptor(doc, bundle_id, where):
    expected = ["leafSize", "id", "message"] + (["parents"] if "parents" in doc else []) + \
        ["timestamp", "contributors", "count", "version", "deduplication"] + \
        (["runstage"] if "runstage" in doc else [])
    check_key_order(doc, expected, where)
    check_leaf_size(doc["leafSize"], f"{where}: leafSize")
    if doc["id"] != bundle_id:
        raise RefError(f"{where}: id {doc['id']!r} is not {bundle_id!r}")
    if not is_ksuid(bundle_id):
        raise RefError(f"{where}: id {bundle_id!r} is not a valid KSUID")
    if not isinstance(doc["message"], str):
        raise RefError(f"{where}: message {doc['message']!r} is not a string")
    if "parents" in doc:
        p = doc["parents"]
        if not isinstance(p, list) or not p or not all(is_ksuid(x) for x in p):
            raise RefError(f"{where}: parents {p!r} is not a non-empty list of KSUIDs")
    check_timestamp(doc["timestamp"], where)
    check_contributors(doc["contributors"], where)
    if not is_int(doc["count"]) or doc["count"] < 0:
        raise RefError(f"{where}: count {doc['count']!r} is not a non-negative integer")
    if doc["version"] != BUNDLE_VERSION or not is_int(doc["version"]):
        raise RefError(f"{where}: version {doc['version']!r} is not {BUNDLE_VERSION}")
    if doc["deduplication"] != "blake":
        raise RefError(f"{where}: deduplication {doc['deduplication']!r} is not 'blake'")
    if "runstage" in doc and not isinstance(doc["runstage"], str):
        raise RefError(f"{where}: runstage is not a string")


def check_entry(e, where):
    if not isinstance(e, dict):
        raise RefError(f"{where}: entry {e!r} is not a mapping")
    check_key_order(e, ENTRY_FIELDS, f"{where}: entry {e.get('name')!r}")
    name = e["name"]
    if not isinstance(name, str) or not name or name.startswith("/") or \
            any(p in ("", ".", "..") for p in name.split("/")):
        raise RefError(f"{where}: bad entry name {name!r}")
    if not isinstance(e["hash"], str) or not HEX_KEY.match(e["hash"]):
        raise RefError(f"{where}: {name}: hash {e['hash']!r} is not 128 lowercase hex chars")
    if e["mode"] != 0 or not is_int(e["mode"]):
        raise RefError(f"{where}: {name}: mode {e['mode']!r} is not 0")
    if not is_int(e["size"]) or e["size"] < 0:
        raise RefError(f"{where}: {name}: size {e['size']!r} is not a non-negative integer")
    check_timestamp(e["timestamp"], f"{where}: {name}")


def verify_file(store, blob, entry, path, leaf_size):
    name = entry["name"]
    size = os.stat(path).st_size
    if entry["size"] != size:
        raise RefError(f"{name}: size is {entry['size']} in the bundle, {size} in the source")

    def check_leaf(key, data, offset, last):
        obj = store.get(blob, key.hex())
        if obj is None:
            raise RefError(f"{name}: leaf object {key.hex()} is missing")
        if len(obj) != len(data):
            raise RefError(f"{name}: leaf object {key.hex()} has {len(obj)} bytes, "
                           f"expected {len(data)}")
        if leaf_key(obj, leaf_size, offset, last) != key:
            raise RefError(f"{name}: leaf object {key.hex()} does not hash to its key")

    with open(path, "rb") as f:
        _, leaves, root = stream_keys(f, leaf_size, check_leaf)
    if entry["hash"] != root.hex():
        raise RefError(f"{name}: hash {entry['hash']} != root key {root.hex()} of the source file")
    obj = store.get(blob, root.hex())
    if obj is None:
        raise RefError(f"{name}: root object {root.hex()} is missing")
    if len(obj) % KEY_SIZE or len(obj) < KEY_SIZE:
        raise RefError(f"{name}: root object has {len(obj)} bytes, not (N+1)*64")
    keys = [obj[i:i + KEY_SIZE] for i in range(0, len(obj), KEY_SIZE)]
    if root_key(keys[:-1], leaf_size) != keys[-1]:
        raise RefError(f"{name}: root object's trailing key is not the root of its leaf keys")
    if keys != leaves + [root]:
        raise RefError(f"{name}: root object does not list the file's {len(leaves)} leaf keys")


def do_verify(a):
    store = FileStore(a.store)
    ctx = load_context(store, a.context)
    blob, meta, vmeta = ctx["blob"], ctx["metadata"], ctx["vmetadata"]

    repo_key = f"repos/{a.repo}/repo.yaml"
    raw = store.get(meta, repo_key)
    if raw is None:
        raise RefError(f"{meta}:{repo_key} is missing")
    if load_yaml(raw, repo_key).get("name") != a.repo:
        raise RefError(f"{repo_key}: name is not {a.repo!r}")

    prefix = f"bundles/{a.repo}/{a.bundle}"
    raw = store.get(meta, f"{prefix}/bundle.yaml")
    if raw is None:
        raise RefError(f"{meta}:{prefix}/bundle.yaml is missing (bundle not committed)")
    bundle = load_yaml(raw, f"{prefix}/bundle.yaml")
    check_bundle_descriptor(bundle, a.bundle, f"{prefix}/bundle.yaml")
    leaf_size, count = bundle["leafSize"], bundle["count"]

    expected_docs = [f"bundle-files-{n}.yaml" for n in range(count)]
    present = [n for n in store.list_dir(meta, prefix) if n.startswith("bundle-files-")]
    extra = sorted(set(present) - set(expected_docs))
    if extra:
        raise RefError(f"{prefix}: unexpected document {extra[0]} (count is {count})")
    entries = {}
    for doc_name in expected_docs:
        where = f"{prefix}/{doc_name}"
        raw = store.get(meta, where)
        if raw is None:
            raise RefError(f"{where} is missing (count is {count})")
        doc = load_yaml(raw, where)
        check_key_order(doc, ["BundleEntries"], where)
        if not isinstance(doc["BundleEntries"], list):
            raise RefError(f"{where}: BundleEntries is not a list")
        if len(doc["BundleEntries"]) > MAX_ENTRIES:
            raise RefError(f"{where}: {len(doc['BundleEntries'])} entries, more than {MAX_ENTRIES}")
        for e in doc["BundleEntries"]:
            check_entry(e, where)
            if e["name"] in entries:
                raise RefError(f"{where}: duplicate entry name {e['name']!r}")
            entries[e["name"]] = e

    source = dict(list_source(a.source))
    missing, unexpected = sorted(set(source) - set(entries)), sorted(set(entries) - set(source))
    if missing:
        raise RefError(f"{len(missing)} source file(s) not in the bundle, e.g. {missing[0]!r}")
    if unexpected:
        raise RefError(f"{len(unexpected)} bundle entries not in the source, e.g. {unexpected[0]!r}")
    for name in sorted(entries):
        verify_file(store, blob, entries[name], source[name], leaf_size)

    if a.label is not None:
        key = f"labels/{a.repo}/{a.label}/label.yaml"
        raw = store.get(vmeta, key)
        if raw is None:
            raise RefError(f"{vmeta}:{key} is missing")
        label = load_yaml(raw, key)
        check_key_order(label, LABEL_FIELDS, key)
        if label["name"] != a.label or label["id"] != a.bundle:
            raise RefError(f"{key}: names {label['name']!r} -> {label['id']!r}, "
                           f"expected {a.label!r} -> {a.bundle!r}")
        check_timestamp(label["timestamp"], key)
        check_contributors(label["contributors"], key)
    return len(entries)


# ----------------------------------------------------------------------- selftest

HELLO_LEAF = ("a80cbf802ec85d3513e67f96a53af975ee108641693332097d0bb263841195003c027cb3073fb5f1"
              "d621851ec9132b7431b8b3e38853627d5a9f8cde4d62e099")
HELLO_ROOT = ("6914dbf186447c478b265aea9e30383c05b8e15576641b12997dd4300639a997c5b04c39eeb00bc"
              "ad6f3eed6f6d2f37bb99acb648b668e427873d7af183e5777")
EMPTY_ROOT = ("a0c4be8a8f5ea443fdd4b148ddd8b187416b07d955c62fc45d4ad4fb88a705a9d5229a236e5bea6"
              "c870d6bd232772c9d7df1431649015432cd74b266ac65a5b5")
MIB = 1024 * 1024
# size -> expected (node_offset, last_node) of each leaf with L = 2 MiB
OFFSET_RULE = {0: [], 12: [(0, True)], 2 * MIB: [(1, False)],
               2 * MIB + 1: [(1, False), (1, True)],
               5 * MIB + 3: [(1, False), (2, False), (2, True)]}
# root keys of pattern(size) with L = 2 MiB (leaf keys are printed by selftest)
PATTERN_ROOTS = {
    2 * MIB: "8ea273e571614d3764e2c3be57c0d424bbd50de59616cda16b43eafb98d235995b9d6f08f5227e04d6"
             "bcfc4a55457b09266327ef1681f415cb5a92416656a821",
    2 * MIB + 1: "6bc39b0ca090e1eed303213a1f5b227ae5b38a03ea394fac6498caad3950da4b7024939d6007b3"
                 "e243211358b68f21b1b74688b08660ac9d103d4ddd9c7ebb32",
    5 * MIB + 3: "84ee69fcc68ab5d926ef3413902bf9deb9d65a6bb9d2e993daeecc084570b6b86b76f56313805b"
                 "91096905f4a2ca98372915dc02591c59f85f4aa7d03e170d0b",
}


def pattern(size):
    """bytes((i * 31 + 7) % 251 for i in range(size)), built fast (period 251)."""
    base = bytes((i * 31 + 7) % 251 for i in range(251))
    return (base * (size // 251 + 1))[:size]


def check(cond, what):
    if not cond:
        raise RefError(f"selftest: {what}")


def do_selftest():
    L = DEFAULT_LEAF_SIZE
    size, leaves, root = stream_keys(io.BytesIO(b"hello world\n"), L)
    check([k.hex() for k in leaves] == [HELLO_LEAF], "hello world leaf key")
    check(root.hex() == HELLO_ROOT, "hello world root key")
    size, leaves, root = stream_keys(io.BytesIO(b""), L)
    check(size == 0 and leaves == [] and root.hex() == EMPTY_ROOT, "empty file root key")
    for size in sorted(OFFSET_RULE):
        data = pattern(size)
        rule = [(off, last) for _, off, last in iter_leaves(io.BytesIO(data), L)]
        check(rule == OFFSET_RULE[size], f"leaf offsets for size {size}: {rule}")
        size_, leaves, root = stream_keys(io.BytesIO(data), L)
        direct = [leaf_key(data[i * L:(i + 1) * L], L, off, last)
                  for i, (off, last) in enumerate(OFFSET_RULE[size])]
        check(size_ == size and leaves == direct and root == root_key(direct, L),
              f"keys for size {size}")
        if size in PATTERN_ROOTS:
            check(root.hex() == PATTERN_ROOTS[size], f"pinned root key for size {size}")
            print(f"pattern size={size} leafSize={L}")
            for i, k in enumerate(leaves):
                print(f"  leaf[{i}] {k.hex()}")
            print(f"  root    {root.hex()}")
    check(new_ksuid(KSUID_EPOCH, bytes(16)) == "0" * 27, "zero KSUID")
    check(new_ksuid(KSUID_EPOCH + 2**32 - 1, b"\xff" * 16) == "aWgEPTl1tmebfsQzFP4bxwgy80V",
          "max KSUID")
    check(is_ksuid(new_ksuid()) and not is_ksuid("aWgEPTl1tmebfsQzFP4bxwgy80W"), "KSUID check")
    with tempfile.TemporaryDirectory() as tmp:       # small write/verify round trip
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "d", "e"))
        for name, data in [("a", b""), ("d/b", b"x"), ("d/e/c", pattern(70)), ("f", pattern(64))]:
            with open(os.path.join(src, *name.split("/")), "wb") as f:
                f.write(data)
        args = argparse.Namespace(store=os.path.join(tmp, "store"), context="t", repo="r",
                                  source=src, leaf_size=32, message="m", label="l",
                                  create_context=True, files_per_doc=3)
        args.bundle = do_write(args)
        check(do_verify(args) == 4, "write/verify round trip")
    print("ok")


# --------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(prog="datamon_ref", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("selftest", help="check reference vectors")
    k = sub.add_parser("keys", help="print the leaf and root keys of a file as JSON")
    k.add_argument("file")
    k.add_argument("--leaf-size", type=int, default=DEFAULT_LEAF_SIZE)
    for name in ("write", "verify"):
        s = sub.add_parser(name)
        s.add_argument("--store", required=True, help="file store root directory")
        s.add_argument("--context", required=True)
        s.add_argument("--repo", required=True)
        s.add_argument("--source", required=True, help="directory uploaded / to compare with")
        s.add_argument("--label")
        if name == "write":
            s.add_argument("--leaf-size", type=int, default=DEFAULT_LEAF_SIZE)
            s.add_argument("--message", default="uploaded by datamon_ref")
            s.add_argument("--create-context", action="store_true")
            s.add_argument("--files-per-doc", type=int, default=MAX_ENTRIES)
        else:
            s.add_argument("--bundle", required=True)
    a = p.parse_args(argv)
    try:
        if a.cmd == "selftest":
            do_selftest()
        elif a.cmd == "keys":
            check_leaf_size(a.leaf_size)
            with open(a.file, "rb") as f:
                size, leaves, root = stream_keys(f, a.leaf_size)
            print(json.dumps({"size": size, "leaves": [x.hex() for x in leaves],
                              "root": root.hex()}))
        elif a.cmd == "write":
            print(do_write(a))
        else:
            print(f"ok {do_verify(a)} files")
    except (RefError, OSError) as exc:
        print(f"datamon_ref: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
