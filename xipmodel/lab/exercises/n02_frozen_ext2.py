"""The exercises of notebooks/02_frozen_ext2.ipynb (the frozen ext2 image).

    block_of_page    02.1  the image block holding a page of a program (compute)
    indirect_blocks  02.2  a file's indirect (metadata) blocks (predict, then verify)
    file_size        02.3  a file size that needs exactly k indirect blocks (construct)
    frozen_open      02.4  a guest writes a page others execute in place (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng

__all__ = ["EXERCISES"]

# The notebook prints these files' block maps: an exercise about them would be answered.
SHOWN: Final = frozenset({"/usr/bin/dash", "/usr/sbin/nginx",
                          "/usr/lib/x86_64-linux-gnu/libc.so.6"})


def _programs() -> list[str]:
    from xipmodel.distro import PROGRAMS

    return sorted({PROGRAMS[p].path for p in PROGRAMS} - SHOWN)


def _block_of_page(seed: int) -> Exercise:
    from xipmodel.distro import default_image

    image = default_image()
    rng = exercise_rng(seed, "block_of_page")
    programs = _programs()
    path = programs[int(rng.integers(len(programs)))]
    pages = len(image.block_map(path))
    page = int(rng.integers(min(pages, 60)))

    def answer(_: int) -> int:
        return int(image.block_map(path)[page])

    def mistakes(_: int) -> dict[int, str]:
        blocks = image.block_map(path)
        return {int(blocks[0]) + page: "that is the first block + the page: after the 12 "
                                       "direct blocks the single-indirect block sits between"}

    def explain(_: int) -> str:
        ino = image.lookup(path)
        inode = image.inode(ino)
        blocks = image.block_map(path)
        where = (f"i_block[{page}] (a direct block)" if page < 12 else
                 f"entry {page - 12} of the single-indirect block i_block[12] = "
                 f"{inode.i_block[12]}")
        return "\n".join([
            f"image.lookup({path!r}) → inode {ino}; its i_size is "
            f"{image.stat(path).st_size} bytes = {pages} pages of 4 KiB.",
            f"Page {page} is {where}.",
            f"image.block_map({path!r})[{page}] = {int(blocks[page])}",
            "In XIP mode that block number is also the page of the shared segment the "
            "guest's PTE points at."])

    return Exercise(
        f"In the embedded distribution (default_image()), which image block holds page "
        f"{page} of {path}?",
        answer, explain, seed, name="02.1", mistakes=mistakes,
        hint="image.block_map(path) lists the block of every page (0 = a hole), or follow "
             "the inode's i_block pointers by hand.")


def _ranges(block_size: int) -> list[tuple[int, int, int]]:
    """(indirect blocks, fewest, most data blocks) for files needing 1, 3, 4, 5, 6 of them."""
    per = block_size // 4
    out = [(1, 13, 12 + per)]
    for children in range(1, 5):  # the double-indirect block, and its first children
        out.append((2 + children, 12 + per + (children - 1) * per + 1,
                    12 + per + children * per))
    return out


@cache
def _indirect_count(size: int, block_size: int) -> int:
    """How many metadata blocks the model's ext2 builder gives a file of `size` bytes."""
    from xipmodel.ext2 import Ext2Image, build_image

    image = Ext2Image.open(build_image({"/f": bytes(size)}, block_size=block_size,
                                       timestamp=0))
    return len(image.metadata_blocks("/f"))


def _indirect_blocks(seed: int) -> Exercise:
    rng = exercise_rng(seed, "indirect_blocks")
    block_size = int(rng.choice([1024, 2048, 4096]))
    _k, low, high = _ranges(block_size)[int(rng.integers(4))]
    blocks = int(rng.integers(low, high + 1))
    size = (blocks - 1) * block_size + int(rng.integers(1, block_size + 1))
    per = block_size // 4

    def answer(_: int) -> int:
        return _indirect_count(size, block_size)

    def mistakes(_: int) -> dict[int, str]:
        beyond = max(0, blocks - 12)
        return {-(-beyond // per): "that counts only the blocks of pointers to data; past "
                                   f"12 + {per} blocks the double-indirect block itself "
                                   "is one more"}

    def explain(_: int) -> str:
        beyond = blocks - 12
        lines = [f"{size:,} bytes = {blocks} blocks of {block_size} bytes (the last one "
                 "partly used).",
                 f"12 direct pointers; a single-indirect block holds {per} block numbers "
                 "(4 bytes each)."]
        if beyond <= per:
            lines.append(f"{beyond} blocks past the direct ones fit in the single-indirect "
                         "block: 1 indirect block.")
        else:
            children = -(-(beyond - per) // per)
            lines.append(f"{beyond} − {per} = {beyond - per} blocks need the double-indirect "
                         f"block and ⌈{beyond - per} / {per}⌉ = {children} of its children: "
                         f"1 + 1 + {children} = {2 + children} indirect blocks.")
        lines.append("Checked with the builder: Ext2Image.open(build_image({'/f': "
                     f"bytes({size})}}, block_size={block_size})).metadata_blocks('/f').")
        return "\n".join(lines)

    return Exercise(
        f"A file of {size:,} bytes is stored on an ext2 image with {block_size}-byte blocks, "
        "no holes. How many indirect (metadata) blocks does it use?",
        answer, explain, seed, name="02.2", kind="predict", unit="blocks", mistakes=mistakes,
        hint="12 direct pointers, then block_size / 4 per indirect block; count the "
             "double-indirect block too.")


def _file_size(seed: int) -> Exercise:
    rng = exercise_rng(seed, "file_size")
    block_size = int(rng.choice([1024, 2048, 4096]))
    k, low, high = _ranges(block_size)[int(rng.integers(5))]
    above_kib = int(rng.integers((low - 1) * block_size // 1024,
                                 (high - 1) * block_size // 1024))
    most = _ranges(block_size)[-1][2] * block_size

    def accept(text: str) -> tuple[bool, str]:
        m = re.fullmatch(r"\s*([\d_,]+)\s*(bytes|b)?\s*", text.lower())
        if not m:
            return False, f"could not read {text.strip()!r} as a size in bytes."
        size = int(m.group(1).replace("_", "").replace(",", ""))
        if not 0 < size <= most:
            return False, f"{size:,} bytes is not in 1 … {most:,}."
        if size <= above_kib * 1024:
            return False, f"{size:,} bytes is not larger than {above_kib} KiB."
        got = _indirect_count(size, block_size)
        if got == k:
            return True, f"a file of {size:,} bytes uses {got} indirect blocks."
        return False, f"a file of {size:,} bytes uses {got} indirect blocks, not {k}."

    def answer(_: int) -> int:
        return high * block_size

    def explain(_: int) -> str:
        return (f"With {block_size}-byte blocks ({block_size // 4} pointers per indirect "
                f"block) a file needs {k} indirect blocks from {low} to {high} data blocks: "
                f"sizes from {(low - 1) * block_size + 1:,} to {high * block_size:,} bytes; "
                f"above {above_kib} KiB = {above_kib * 1024:,} bytes, any of "
                f"{max(above_kib * 1024 + 1, (low - 1) * block_size + 1):,} … "
                f"{high * block_size:,}.")

    return Exercise(
        f"Give a file size in bytes, larger than {above_kib} KiB, for which a file on an "
        f"ext2 image with {block_size}-byte blocks (no holes) needs exactly {k} indirect "
        "block" + ("s." if k > 1 else "."),
        answer, explain, seed, name="02.3", kind="construct", accept=accept,
        hint="Count: 12 direct, then block_size / 4 pointers per indirect block.")


def _frozen_open(seed: int) -> Exercise:
    from xipmodel.distro import default_image

    image = default_image()
    rng = exercise_rng(seed, "frozen_open")
    programs = _programs()
    path = programs[int(rng.integers(len(programs)))]
    page = int(rng.integers(min(len(image.block_map(path)), 60)))
    block = int(image.block_map(path)[page])
    shared = bool(rng.integers(2))

    def answer(_: int) -> str:
        return ("Guest B's MAP_SHARED writable mmap is refused (ReadOnlyImageError, EROFS): "
                "a shared writable mapping would write the frozen image."
                if shared else
                "Guest B's MAP_PRIVATE write faults (write to a read-only PTE) and "
                "do_cow_fault/wp_page_copy gives B a private copy of the page in a new host "
                "frame; B's PTE now points there.") + (
                f" Guest A still executes image block {block} from the shared segment, "
                "unchanged: the image is bytes, read-only by construction, so no guest can "
                "change what the others execute. Only a new image (populate, freeze again) "
                "changes the program for everyone.")

    def explain(_: int) -> str:
        return ("02's 'Frozen means read-only' cell shows the refusal; notebook 05 shows "
                "the copy-on-write path (cow_frames).")

    how = ("maps the same file MAP_SHARED, read-write, to patch it" if shared else
           "maps the same file MAP_PRIVATE, read-write, and writes to that page (a debugger "
           "setting a breakpoint)")
    return Exercise(
        f"Guest A executes page {page} of {path} in place: its PTE points at image block "
        f"{block} of the shared segment. Guest B {how}. What happens in B, and what does A "
        "execute afterwards? Why?",
        answer, explain, seed, name="02.4", kind="open",
        hint="Frozen means read-only: who may get a copy, who may not write?")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "block_of_page": _block_of_page,
    "indirect_blocks": _indirect_blocks,
    "file_size": _file_size,
    "frozen_open": _frozen_open,
}
