"""The command line: `python -m xipmodel COMMAND ...` (also installed as `xipmodel`).

    demo                    the story in the terminal: populate, freeze, find a file's blocks
    info IMAGE              the superblock and block groups, like `dumpe2fs -h`
    ls IMAGE [PATH]         a directory listing with inode numbers, modes and sizes
    bmap IMAGE PATH         which image block holds each page of a file (holes shown)
    cat IMAGE PATH          a file's bytes to standard output

Bad input gets one clear line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import stat
import sys
from collections.abc import Sequence

from xipmodel.errors import XipModelError
from xipmodel.ext2 import Ext2Image
from xipmodel.ext2 import layout as L


def _runs(blocks: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first logical, count, first physical or 0) for each contiguous run of a block map."""
    runs: list[tuple[int, int, int]] = []
    for i, b in enumerate(blocks):
        if runs:
            start, count, phys = runs[-1]
            if (phys == 0 and b == 0) or (phys and b == phys + count):
                runs[-1] = (start, count + 1, phys)
                continue
        runs.append((i, 1, b))
    return runs


def format_block_map(blocks: Sequence[int]) -> str:
    """A block map as debugfs prints it: `(0-11):1234-1245, (12):hole, ...`."""
    parts = []
    for start, count, phys in _runs(blocks):
        logical = f"{start}" if count == 1 else f"{start}-{start + count - 1}"
        physical = "hole" if phys == 0 else (
            f"{phys}" if count == 1 else f"{phys}-{phys + count - 1}")
        parts.append(f"({logical}):{physical}")
    return ", ".join(parts) if parts else "(empty file)"


def cmd_info(img: Ext2Image) -> str:
    sb = img.superblock
    lines = [
        f"Filesystem volume name:   {img.volume_name or '<none>'}",
        f"Filesystem UUID:          {sb.s_uuid.hex()}",
        f"Filesystem magic number:  0x{sb.s_magic:04X}",
        f"Filesystem revision #:    {sb.s_rev_level}",
        "Filesystem features:      " + " ".join(
            L.feature_names(sb.s_feature_compat, L.FEATURE_COMPAT)
            + L.feature_names(sb.s_feature_incompat, L.FEATURE_INCOMPAT)
            + L.feature_names(sb.s_feature_ro_compat, L.FEATURE_RO_COMPAT)),
        f"Inode count:              {sb.s_inodes_count}",
        f"Block count:              {sb.s_blocks_count}",
        f"Free blocks:              {sb.s_free_blocks_count}",
        f"Free inodes:              {sb.s_free_inodes_count}",
        f"First block:              {sb.s_first_data_block}",
        f"Block size:               {img.block_size}",
        f"Blocks per group:         {sb.s_blocks_per_group}",
        f"Inodes per group:         {sb.s_inodes_per_group}",
        f"Inode size:               {img.inode_size}",
        f"First inode:              {img.first_ino}",
        f"Group count:              {img.groups_count}",
    ]
    for g in range(min(img.groups_count, 8)):
        d = img.group_desc(g)
        lines.append(f"Group {g}: block bitmap at {d.bg_block_bitmap}, inode bitmap at "
                     f"{d.bg_inode_bitmap}, inode table at {d.bg_inode_table}")
    if img.groups_count > 8:
        lines.append(f"... and {img.groups_count - 8} more groups")
    return "\n".join(lines)


def cmd_ls(img: Ext2Image, path: str) -> str:
    lines = []
    for name in sorted(img.listdir(path)):
        full = path.rstrip("/") + "/" + name
        st = img.lstat(full)
        extra = f" -> {img.readlink(full)}" if stat.S_ISLNK(st.st_mode) else ""
        lines.append(f"{st.st_ino:>8} {stat.filemode(st.st_mode)} {st.st_nlink:>3} "
                     f"{st.st_size:>10}  {name}{extra}")
    return "\n".join(lines)


def cmd_bmap(img: Ext2Image, path: str) -> str:
    blocks = img.block_map(path).tolist()
    st = img.stat(path)
    meta = ", ".join(f"({m.kind}):{m.block}" for m in img.metadata_blocks(path))
    return "\n".join([
        f"{path}: inode {st.st_ino}, {st.st_size} bytes, {len(blocks)} blocks of {img.block_size}",
        f"BLOCKS: {format_block_map(blocks)}",
        f"indirect: {meta or '(none)'}",
    ])


def cmd_demo(guests: int = 4) -> str:
    """Populate and freeze a small image, then run `guests` guests in each mode side by side."""
    from xipmodel.ext2 import Symlink, build_image
    from xipmodel.mm.frames import FrameKind, HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.segment import SharedSegment
    from xipmodel.params import PAGE_SIZE

    sh_pages, libc_pages = 240, 460  # about the size of dash and libc.so.6
    tree: dict[str, bytes | Symlink] = {
        "/bin/sh": bytes(range(256)) * (sh_pages * PAGE_SIZE // 256),
        "/lib/libc.so.6": bytes(range(255, -1, -1)) * (libc_pages * PAGE_SIZE // 256),
        "/bin/bash": Symlink("sh"),
    }
    out = ["Populate, freeze, share: a read-only ext2 image, built in pure Python.", ""]
    with Ext2Image.open(build_image(tree, volume_name="xip-demo")) as img:
        out += [repr(img), "", cmd_ls(img, "/bin"), "", cmd_bmap(img, "/bin/sh"), ""]
        rows = []
        for xip in (False, True):
            host = HostMemory()
            segment = SharedSegment(host, img) if xip else None
            for gid in range(guests):
                guest = Guest(gid, host, 16384, img, segment=segment)
                mm = guest.new_process("sh")
                guest.mmap(mm, 0x400000, sh_pages * PAGE_SIZE, "r-x", path="/bin/sh")
                guest.mmap(mm, 0x7F0000000000, libc_pages * PAGE_SIZE, "r-x",
                           path="/lib/libc.so.6")
                for page in range(0, sh_pages, 2):  # a run touches half of sh's text
                    guest.access(mm, 0x400000 + page * PAGE_SIZE, "x")
                for page in range(0, libc_pages, 3):  # and a third of libc's
                    guest.access(mm, 0x7F0000000000 + page * PAGE_SIZE, "x")
            kinds = host.counts_by_kind()
            file_frames = kinds[FrameKind.PAGECACHE] + kinds[FrameKind.SHARED]
            rows.append((("XIP (shared segment)" if xip else "page cache"),
                         host.allocated, file_frames))
        out.append(f"{guests} guests each run /bin/sh (its text and libc's) once:")
        out.append(f"  {'mode':22} {'host frames':>12} {'of which file pages':>20}")
        for name, total, files in rows:
            out.append(f"  {name:22} {total:>12} {files:>20}")
        saving = 1 - rows[1][1] / rows[0][1]
        out.append(f"  XIP saves {saving:.0%} of host memory: each binary page is held once, in")
        out.append("  the shared segment, instead of once per guest in its page cache. This demo")
        out.append("  has no heaps: real guests also hold private anonymous memory that XIP")
        out.append("  cannot share, so their saving is smaller.")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xipmodel", description="Execute-in-place versus the page cache, as a model.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the story in the terminal")
    for name, help_text, needs_path in [
        ("info", "superblock and groups, like dumpe2fs -h", False),
        ("ls", "list a directory of an image", False),
        ("bmap", "which image block holds each block of a file", True),
        ("cat", "write a file of an image to standard output", True),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("image", help="an ext2 image file")
        if name == "ls":
            p.add_argument("path", nargs="?", default="/")
        elif needs_path:
            p.add_argument("path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            print(cmd_demo())
            return 0
        with Ext2Image.open(args.image) as img:
            if args.command == "info":
                print(cmd_info(img))
            elif args.command == "ls":
                print(cmd_ls(img, args.path))
            elif args.command == "bmap":
                print(cmd_bmap(img, args.path))
            elif args.command == "cat":
                sys.stdout.buffer.write(img.read(args.path))
    except (XipModelError, OSError) as exc:
        print(f"xipmodel {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
