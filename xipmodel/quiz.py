"""Seeded questions in the style of the OSTEP homework simulators, with a "solve" mode.

    make_question(seed)            → Question (the kind chosen by the seed)
    make_question(seed, "faults")  → a question of one kind
    question.text(solve=True)      → the question, then the worked answer step by step

Three kinds of question::

    translate   a TINY machine's memory dump and page-directory base register (OSTEP's
                paging-multilevel-translate): translate virtual addresses by hand;
                the answer is the walk (WalkResult.explain), and one address again
                under nested paging (nested_walk(...).explain)
    faults      one guest runs a short sequence of accesses on a small frozen image,
                executing in place (XIP) or through its page cache: which accesses fault,
                major or minor, and what is read from the disk? (answer: explain traces)
    memory      N guests run the same accesses: how many host frames hold file pages
                and private pages in each mode? (answer: the model's frame counts, and
                the arithmetic shared-once versus once-per-guest)

Everything comes from the seed: the same seed gives the same question and answer,
in any process. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.events import EventBus
from xipmodel.explain import Recorder, fault_flags
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.memory import VmFault
from xipmodel.mm.pagetable import PageTable, nested_walk
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vma import MmStruct
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE, TINY

__all__ = ["KINDS", "Question", "make_question"]

KINDS: Final = ("translate", "faults", "memory")
TEXT: Final = 0x400000  # where the quiz program's text is mapped
HEAP: Final = 0x1000000  # and its heap
APP_PAGES: Final = 48  # /bin/app: 48 pages, so the 32-page read-around window fits in it
HEAP_PAGES: Final = 16


@dataclass
class Question:
    """One seeded question: what to print, and the worked answer."""

    kind: str
    seed: int
    prompt: list[str]
    answer: list[str] = field(default_factory=list)

    def text(self, solve: bool = False) -> str:
        """The question; with `solve`, the worked answer after it."""
        lines = [f"xipmodel quiz, seed {self.seed} ({self.kind})", "", *self.prompt]
        if solve:
            lines += ["", "Solution", "--------", *self.answer]
        else:
            lines += ["", "(run again with --solve for the worked answer)"]
        return "\n".join(lines)


def make_question(seed: int, kind: str | None = None) -> Question:
    """The question for `seed` (of `kind`, else a kind the seed picks)."""
    if kind is not None and kind not in KINDS:
        raise ParameterError(f"quiz: kind {kind!r} is not one of {', '.join(KINDS)}")
    if seed < 0:
        raise ParameterError(f"quiz: seed {seed} must be >= 0")
    rng = np.random.default_rng([seed, 0x5EED])
    chosen = kind if kind is not None else KINDS[int(rng.integers(len(KINDS)))]
    make = {"translate": _translate, "faults": _faults, "memory": _memory}[chosen]
    return make(seed, np.random.default_rng([seed, KINDS.index(chosen)]))


# ── translate: OSTEP's paging-multilevel-translate on the TINY preset ───────────────────────

def _tiny_memory(rng: np.random.Generator) -> tuple[bytearray, int, list[int]]:
    """A 4 KiB TINY memory: a page directory, a few page tables, data pages; (mem, pdbr, VPNs).

    Invalid entries hold 0x7f (valid bit clear), as OSTEP's dumps do; unused frames are zero.
    """
    p = TINY
    frames = [int(f) for f in rng.permutation(p.pfn_mask + 1)[1:]]  # frame 0 stays unused
    mem = bytearray(p.pfn_mask + 1 << p.page_shift)
    pdbr = frames.pop()
    pd = [0x7F] * p.entries[0]
    mapped: list[int] = []
    for pde in sorted(int(i) for i in rng.choice(p.entries[0], size=3, replace=False)):
        pt_frame = frames.pop()
        pd[pde] = p.pte_present | pt_frame
        pt = [0x7F] * p.entries[1]
        for pte in sorted(int(i) for i in rng.choice(p.entries[1], size=6, replace=False)):
            data = frames.pop()
            pt[pte] = p.pte_present | data
            start = data << p.page_shift
            mem[start:start + p.page_size] = rng.integers(0, 0x1F, p.page_size,
                                                          dtype=np.uint8).tobytes()
            mapped.append(pde << p.levels[1] | pte)
        mem[pt_frame << p.page_shift:(pt_frame + 1) << p.page_shift] = bytes(pt)
    mem[pdbr << p.page_shift:(pdbr + 1) << p.page_shift] = bytes(pd)
    return mem, pdbr, mapped


def _translate(seed: int, rng: np.random.Generator) -> Question:
    p = TINY
    mem, pdbr, mapped = _tiny_memory(rng)
    pt = PageTable.from_memory(p, mem, pdbr)
    # Three mapped addresses, one whose PTE is invalid, one whose PDE is invalid.
    vpns = [int(v) for v in rng.choice(mapped, size=3, replace=False)]
    valid_pdes = {v >> p.levels[1] for v in mapped}
    pde = int(rng.choice(sorted(valid_pdes)))
    vpns.append(pde << p.levels[1] | int(rng.choice(
        [i for i in range(p.entries[1]) if (pde << p.levels[1] | i) not in mapped])))
    vpns.append(int(rng.choice([i for i in range(p.entries[0]) if i not in valid_pdes]))
                << p.levels[1] | int(rng.integers(p.entries[1])))
    order = rng.permutation(len(vpns))
    vas = [vpns[i] << p.page_shift | int(rng.integers(p.page_size)) for i in order]

    prompt = [
        f"A TINY machine (OSTEP paging-multilevel-translate): {p.page_size}-byte pages, "
        f"{p.va_bits}-bit virtual",
        f"addresses ({p.levels[0]}-bit page-directory index, {p.levels[1]}-bit page-table "
        f"index, {p.page_shift}-bit offset),",
        f"{len(mem)} bytes of physical memory ({p.pfn_mask + 1} frames). A PDE or PTE is one "
        "byte: valid bit 0x80,",
        "then a 7-bit frame number. The page directory is in the frame the PDBR names.",
        "",
        f"PDBR: {pdbr}  (decimal) [This means the page directory is held in this page]",
        "",
    ]
    prompt += [f"page {i:3d}:{mem[i * p.page_size:(i + 1) * p.page_size].hex()}"
               for i in range(p.pfn_mask + 1)]
    prompt.append("")
    prompt += [f"Virtual Address {va:#06x}: Translates To What Physical Address "
               "(And Fetches what Value)? Or Fault?" for va in vas]
    last = vas[0] if pt.walk(vas[0]).present else next(v for v in vas if pt.walk(v).present)
    prompt += ["",
               "Bonus: this machine is a guest. Its hypervisor maps guest frames with a TINY "
               "table too.",
               f"How many memory references does the nested walk of {last:#06x} make?"]

    answer: list[str] = []
    for va in vas:
        w = pt.walk(va)
        answer.append(f"Virtual Address {va:#06x}:")
        answer += ["  " + line for line in w.explain()]
        if w.pa is not None:
            answer.append(f"    --> Translates to Physical Address {w.pa:#05x} --> "
                          f"Value: {mem[w.pa]:#04x}")
        else:
            answer.append(f"    --> Fault ({w.stopped_at} entry not valid, after "
                          f"{w.refs} reference{'s' if w.refs != 1 else ''})")
    answer += ["", *_nested_answer(rng, pt, pdbr, last)]
    return Question("translate", seed, prompt, answer)


def _nested_answer(rng: np.random.Generator, guest: PageTable, pdbr: int, gva: int
                   ) -> list[str]:
    """The bonus: `gva` walked again with every guest-physical address behind a host table."""
    p = TINY
    used = sorted({pdbr, *guest.tables} | {(guest.walk(gva).pa or 0) >> p.page_shift})
    host_frames = [int(f) for f in rng.permutation(p.pfn_mask + 1)[1:]]
    host = PageTable(p, alloc_table=lambda: host_frames.pop() if host_frames else None)
    for gfn in used:  # the host maps the guest frames this walk touches
        if not host.map(gfn, host_frames.pop()):
            raise RuntimeError("quiz: the host table ran out of frames")
    nw = nested_walk(guest, host, gva)
    g, h = p.nlevels, p.nlevels
    return [f"Bonus: the nested walk of {gva:#06x}. Each of the {g} guest entries lives at a "
            "guest-physical",
            f"address the host table translates first ({h} references each), and so does the "
            "final",
            f"guest-physical address: ({g}+1)({h}+1) − 1 = {(g + 1) * (h + 1) - 1} references.",
            *["  " + line for line in nw.explain()]]


# ── faults: XIP versus the page cache on a small image ─────────────────────────────────────

def _small_image(seed: int) -> Ext2Image:
    """/bin/app (APP_PAGES pages of seeded bytes) on a frozen image; same seed, same bytes."""
    data = np.random.default_rng([seed, 0xA99]).integers(0, 256, APP_PAGES * PAGE_SIZE,
                                                          dtype=np.uint8).tobytes()
    return Ext2Image.open(build_image({"/bin/app": data}, volume_name="quiz", timestamp=0))


def _accesses(rng: np.random.Generator, n: int = 6) -> list[tuple[int, str]]:
    """`n` accesses: executed text pages (some repeated, some neighbours) and heap writes."""
    out: list[tuple[int, str]] = []
    page = int(rng.integers(APP_PAGES))
    for _ in range(n):
        roll = rng.random()
        if roll < 0.2:
            out.append((HEAP + int(rng.integers(HEAP_PAGES)) * PAGE_SIZE, "w"))
            continue
        if roll < 0.45 and out:
            pass  # the same page again
        elif roll < 0.75:
            page = min(APP_PAGES - 1, page + 1)  # the next page
        else:
            page = int(rng.integers(APP_PAGES))
        out.append((TEXT + page * PAGE_SIZE + int(rng.integers(PAGE_SIZE // 16)) * 16, "x"))
    return out


class _World:
    """A host, one event bus, the image and (for XIP) the shared segment holding it."""

    def __init__(self, image: Ext2Image, xip: bool) -> None:
        self.host = HostMemory()
        self.bus = EventBus()
        self.segment = SharedSegment(self.host, image, bus=self.bus) if xip else None
        self.image = image

    def guest(self, gid: int) -> tuple[Guest, MmStruct]:
        guest = Guest(gid, self.host, 256, self.image, segment=self.segment, bus=self.bus)
        mm = guest.new_process("app")
        assert mm is not None, "quiz: a fresh guest has free frames"
        guest.mmap(mm, TEXT, APP_PAGES * PAGE_SIZE, "r-x", path="/bin/app")
        guest.mmap(mm, HEAP, HEAP_PAGES * PAGE_SIZE, "rw-")
        return guest, mm


def _describe(accesses: list[tuple[int, str]]) -> list[str]:
    names = {"x": "execute", "r": "read", "w": "write"}
    return [f"  {i + 1}. {names[k]:7} VA {va:#x}  ("
            + (f"/bin/app page {(va - TEXT) >> PAGE_SHIFT}" if va < HEAP
               else f"heap page {(va - HEAP) >> PAGE_SHIFT}") + ")"
            for i, (va, k) in enumerate(accesses)]


def _setting(image: Ext2Image) -> list[str]:
    return [f"A frozen ext2 image holds /bin/app, {APP_PAGES} pages of 4 KiB (image blocks "
            f"{_ranges(image)}).",
            f"A process maps it r-x at {TEXT:#x} and a {HEAP_PAGES}-page anonymous heap at "
            f"{HEAP:#x}."]


def _ranges(image: Ext2Image) -> str:
    blocks = image.block_map("/bin/app").tolist()
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ", ".join(f"{a}–{b}" if a != b else f"{a}" for a, b in runs)


def _faults(seed: int, rng: np.random.Generator) -> Question:
    image = _small_image(seed)
    accesses = _accesses(rng)
    prompt = [*_setting(image), "It makes these accesses, in order:", *_describe(accesses), "",
              "Run it once in a guest that mounts the image -o xip (the image sits in host "
              "memory,",
              "shared), and once in a guest that reads it through its own page cache "
              "(read-around 32 pages,",
              "fault-around 16). For each mode: which accesses fault? Major or minor? How many "
              "bytes",
              "come from the virtual disk?"]
    answer: list[str] = []
    for xip in (True, False):
        world = _World(image, xip)
        guest, mm = world.guest(0)
        name = "xip" if xip else "pagecache"
        flags: list[tuple[int, bool]] = []
        with Recorder(world.bus, guest_names={0: name}) as rec:
            for va, kind in accesses:
                before = guest.stats.major_faults + guest.stats.minor_faults
                result = guest.access(mm, va, kind)
                flags.append((result, guest.stats.major_faults + guest.stats.minor_faults
                              > before))
        answer.append(f"{'XIP (execute in place)' if xip else 'Page cache'}:")
        answer += ["  " + line for line in rec.lines()]
        summary = [f"{i + 1}: {_fault_kind(f, faulted)}" for i, (f, faulted) in enumerate(flags)]
        answer.append("  In short: " + "; ".join(summary) + ".")
        answer.append(f"  {guest.stats.major_faults} major, {guest.stats.minor_faults} minor "
                      f"faults; {guest.stats.disk_read_bytes} bytes read from the disk.")
        answer.append("")
    answer.append("XIP never reads the disk and never fills a page cache: a fault on the image "
                  "points the PTE")
    answer.append("into the shared segment. The page cache pays a major fault (and read-around) "
                  "the first time,")
    answer.append("then maps neighbours that are already cached (fault-around) with minor "
                  "faults.")
    return Question("faults", seed, prompt, answer)


def _fault_kind(flags: int, faulted: bool) -> str:
    """How the summary names an access: the stats say whether it faulted (a fault served
    by do_anonymous_page returns no flags at all), the flags say how."""
    if not faulted:
        return "no fault"
    kind = "major" if flags & VmFault.MAJOR else "minor"
    return f"{kind} fault [{fault_flags(flags)}]"


# ── memory: N guests, shared once or held per guest ────────────────────────────────────────

def _memory(seed: int, rng: np.random.Generator) -> Question:
    image = _small_image(seed)
    guests = int(rng.integers(2, 6))
    text_pages = sorted(int(p) for p in rng.choice(APP_PAGES, size=int(rng.integers(6, 14)),
                                                   replace=False))
    heap_pages = int(rng.integers(2, HEAP_PAGES))
    accesses = [(TEXT + p * PAGE_SIZE, "x") for p in text_pages]
    accesses += [(HEAP + p * PAGE_SIZE, "w") for p in range(heap_pages)]
    prompt = [*_setting(image),
              f"{guests} guests each run it once: execute /bin/app pages "
              f"{', '.join(map(str, text_pages))}",
              f"({len(text_pages)} pages), then write heap pages 0–{heap_pages - 1} "
              f"({heap_pages} pages).",
              "",
              "How many host frames hold (a) pages of /bin/app and (b) the heaps, in XIP mode "
              "and in",
              "page-cache mode (read-around 32 pages)? Do not count page-table pages. What does "
              "XIP save?"]
    counts: dict[str, dict[FrameKind, int]] = {}
    first_guest: dict[str, list[str]] = {}
    for xip in (True, False):
        world = _World(image, xip)
        name = "xip" if xip else "pagecache"
        for gid in range(guests):
            guest, mm = world.guest(gid)
            with Recorder(world.bus, guest_names={gid: f"{name} {gid}"}) as rec:
                for va, kind in accesses:
                    guest.access(mm, va, kind)
            if gid == 0:
                first_guest[name] = rec.lines()
        counts[name] = world.host.counts_by_kind()
    xip_file = counts["xip"][FrameKind.SHARED]
    pc_file = counts["pagecache"][FrameKind.PAGECACHE]
    per_guest_cache = pc_file // guests
    xip_anon = counts["xip"][FrameKind.ANON]
    pc_anon = counts["pagecache"][FrameKind.ANON]
    answer = [
        "What the first guest's accesses did (explain, abridged; the other guests repeat it):",
        "  XIP: the first touch of each image block pages it into host memory, once",
        *("  " + line.strip() for line in first_guest["xip"] if "host pages in" in line),
        "  page cache: each miss reads a read-around window from the disk",
        *("  " + line.strip() for line in first_guest["pagecache"]
          if "read-around" in line or "disk read" in line),
        "",
        f"XIP: the {len(text_pages)} executed pages are paged into the shared segment once, "
        f"by the first guest:",
        f"  (a) {xip_file} frames, whatever the number of guests",
        f"  (b) {guests} × {xip_anon // guests} heap pages = {xip_anon} frames (private: "
        "never shared)",
        f"  total {xip_file} + {xip_anon} = {xip_file + xip_anon} frames",
        "Page cache: each guest reads the read-around windows around its misses into its "
        "own cache:",
        f"  (a) {guests} × {per_guest_cache} = {pc_file} frames ({per_guest_cache} per guest "
        f"for {len(text_pages)} pages used: over-fetch {per_guest_cache - len(text_pages)})",
        f"  (b) {guests} × {pc_anon // guests} = {pc_anon} frames, as in XIP",
        f"  total {pc_file} + {pc_anon} = {pc_file + pc_anon} frames",
        f"XIP saves {pc_file + pc_anon - xip_file - xip_anon} frames "
        f"({(pc_file - xip_file) * PAGE_SIZE >> 10} KiB): {guests} × {per_guest_cache} − "
        f"{xip_file}. Each further guest",
        f"adds {per_guest_cache + pc_anon // guests} frames with the page cache but only "
        f"{xip_anon // guests} with XIP.",
    ]
    return Question("memory", seed, prompt, answer)
