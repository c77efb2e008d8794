"""The exercises of notebooks/02_frozen_ext2.ipynb (the frozen ext2 image).

    block_of_page    02.1  the image block holding a page of a program
    indirect_blocks  02.2  a file's indirect (metadata) blocks

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng

__all__ = ["EXERCISES"]


def _block_of_page(seed: int) -> Exercise:
    from xipmodel.distro import PROGRAMS, default_image

    image = default_image()
    rng = exercise_rng(seed, "block_of_page")
    program = sorted(PROGRAMS)[int(rng.integers(len(PROGRAMS)))]
    path = PROGRAMS[program].path
    pages = len(image.block_map(path))
    page = int(rng.integers(min(pages, 40)))

    def answer(_: int) -> int:
        return int(image.block_map(path)[page])

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
        answer, explain, seed, name="02.1",
        hint="image.block_map(path) lists the block of every page (0 = a hole).")


def _indirect_blocks(seed: int) -> Exercise:
    from xipmodel.distro import default_image

    image = default_image()
    files = sorted(p for p in (f"{d}/{n}" for d in ("/usr/bin", "/usr/lib/x86_64-linux-gnu")
                               if image.isdir(d) for n in image.listdir(d))
                   if not image.isdir(p) and image.stat(p).st_size > 12 * 4096)
    path = files[int(exercise_rng(seed, "indirect_blocks").integers(len(files)))]

    def answer(_: int) -> int:
        return len(image.metadata_blocks(path))

    def explain(_: int) -> str:
        meta = image.metadata_blocks(path)
        pages = len(image.block_map(path))
        per = image.block_size // 4
        return "\n".join([
            f"{path}: {image.stat(path).st_size} bytes = {pages} blocks of "
            f"{image.block_size} bytes.",
            f"12 direct pointers in the inode; one single-indirect block holds {per} more "
            f"(a {image.block_size}-byte block of 4-byte block numbers); beyond 12 + {per} "
            "blocks a double-indirect block and its children are needed.",
            "image.metadata_blocks(path):",
            *(f"  {m}" for m in meta)])

    return Exercise(
        f"How many indirect (metadata) blocks does {path} use in the embedded distribution's "
        "image?",
        answer, explain, seed, name="02.2",
        hint="Count the blocks beyond the 12 direct ones: each indirect block holds "
             "block_size / 4 pointers. image.metadata_blocks(path) lists them.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "block_of_page": _block_of_page,
    "indirect_blocks": _indirect_blocks,
}
