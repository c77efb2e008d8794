"""Views: pure functions of model state returning plotly figure data as plain dicts and lists.

Nothing here imports plotly or ipywidgets, so every view is testable without a
browser (or without the lab extra)::

    dashboard_figures_data(results, curve)   → {"memory", "guests", "faults"}: figure dicts
    memory_map_data(host, start, per_cell)   → a heat strip of host frames, hover text
    describe_frame(host, pfn)                → what one host frame holds, in words
    walk_data(guest, mm, va)                 → TLB → nested walk → frame, as table rows
    ext2_file_data(image, path)              → superblock → group → inode → blocks
    timeline_data(result)                    → memory per category over time, KSM

A figure dict is {"data": [trace dicts], "layout": {…}}, what
plotly.graph_objects.Figure(dict) accepts. Each view returns the same number of
traces whatever its input, so a controller updates a FigureWidget in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from xipmodel.ext2 import layout as L
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import CATEGORIES, KSM_TIMELINE_COLUMNS, MODES, Comparison, Host, RunResult
from xipmodel.mm.frames import CONTENT_BLOCK, CONTENT_ZERO, OWNER_HOST, OWNER_SEGMENT, FrameKind
from xipmodel.mm.guest import Guest
from xipmodel.mm.pagetable import nested_walk
from xipmodel.mm.vma import MmStruct
from xipmodel.params import PAGE_SHIFT

__all__ = [
    "BLOCK_CLASSES",
    "CATEGORY_COLORS",
    "CATEGORY_WORDS",
    "KIND_CATEGORY",
    "KIND_COLORS",
    "MIB",
    "MODE_COLORS",
    "FrameIndex",
    "block_owners",
    "break_even",
    "dashboard_figures_data",
    "describe_frame",
    "ext2_file_data",
    "faults_bars",
    "guests_curve",
    "guests_lines",
    "mapped_pages",
    "memory_bars",
    "memory_map_data",
    "regular_files",
    "timeline_data",
    "walk_data",
    "walk_table",
]

Figure = dict[str, Any]
MIB: Final = 1 << 20

# One colour per category, used by every figure (a category is the same colour everywhere).
CATEGORY_COLORS: Final = {
    "shared": "#2ca02c", "page_cache": "#1f77b4", "anon": "#ff7f0e", "cow": "#d62728",
    "page_tables": "#9467bd", "ksm": "#8c564b", "guest_free": "#b0b0b0", "zero": "#17becf",
    "struct_pages": "#bcbd22",
}
# The words a student sees for the host-memory categories (legends, hover text, the static
# figures of figures.py): not the code's keys, and "ksm" stays the name of a mode only.
CATEGORY_WORDS: Final = {
    "shared": "shared image pages", "page_cache": "page cache", "anon": "anonymous memory",
    "cow": "CoW copies", "page_tables": "page tables", "ksm": "KSM merged + metadata",
    "guest_free": "freed guest pages", "zero": "zero page",
    "struct_pages": "struct pages (DAX)",
}
MODE_COLORS: Final = {"pagecache": "#1f77b4", "xip": "#2ca02c", "ksm": "#8c564b",
                      "dax": "#e377c2"}
# A frame kind takes its category's colour (HOSTCACHE is "shared", as in RunResult).
KIND_CATEGORY: Final = {
    FrameKind.ZERO: "zero", FrameKind.SHARED: "shared", FrameKind.HOSTCACHE: "shared",
    FrameKind.PAGECACHE: "page_cache", FrameKind.ANON: "anon", FrameKind.COW: "cow",
    FrameKind.PAGETABLE: "page_tables", FrameKind.KSM: "ksm", FrameKind.GUEST_FREE: "guest_free",
    FrameKind.MEMMAP: "struct_pages",
}
KIND_COLORS: Final = {FrameKind.FREE: "#ffffff",
                      **{k: CATEGORY_COLORS[c] for k, c in KIND_CATEGORY.items()}}
_KIND_WORDS: Final = {
    FrameKind.FREE: "free", FrameKind.ZERO: "the host's zero page",
    FrameKind.SHARED: "shared segment (XIP)", FrameKind.HOSTCACHE: "host page cache (DAX)",
    FrameKind.PAGECACHE: "guest page cache", FrameKind.ANON: "guest anonymous memory",
    FrameKind.COW: "private CoW copy", FrameKind.PAGETABLE: "page table",
    FrameKind.KSM: "KSM stable frame", FrameKind.GUEST_FREE: "guest RAM freed by the guest",
    FrameKind.MEMMAP: "struct pages of the DAX device",
}


def _mib(n: int | float) -> float:
    return round(float(n) / MIB, 6)


# ── the comparison dashboard ────────────────────────────────────────────────────────────

def _modes_of(results: Mapping[str, RunResult], pending: Sequence[str]) -> list[str]:
    """The modes to draw: those of `results`, in MODES order if some are still pending."""
    if not pending:
        return list(results)
    return sorted({*results, *pending}, key=lambda m: MODES.index(m) if m in MODES else 99)


# The dashboard's bar charts are redrawn whole at each move of its guests slider (plotly.js
# redraws a figure whose data change), so they ask it to measure nothing it need not: value
# axes keep every tick label (ticklabeloverflow "allow"; plotly's default on a linear axis
# measures each label in the page, a forced layout of the whole page, to hide any that
# passes the figure's edge: ours never do) and bars carry no text (textposition "none": no
# text fonts worked out per trace). Same pixels (screenshots at 8, 64 and 256 guests); in
# JupyterLab a move's redraw took a quarter less CPU (traced: 30 ms instead of 42, at 64).
# Their value axes are given a range (value_range), the same for most neighbouring counts:
# plotly.js then draws tick labels it has measured before (about 10 ms less per move).
_BARS: Final = {"textposition": "none"}
_VALUE_AXIS: Final = {"ticklabeloverflow": "allow"}
_ROUND: Final = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def value_range(heights: Sequence[float | None]) -> list[float]:
    """A value axis's range: from 0 to the first round number (1, 1.2, 1.5, 2, 2.5, 3, 4,
    5, 6 or 8 times a power of ten) at or above the tallest bar plus 5% (autorange's
    padding); [0, 1] without a bar (None, NaN and infinities are none). Moved a guest at
    a time, the slider leaves the axis and its tick labels as they were most of the time,
    where autorange would move every tick: easier to read the bars' change against, and
    plotly.js measures only labels it has not drawn before (each measure a forced layout
    of the whole page)."""
    top = 1.05 * max((h for h in heights if h and math.isfinite(h)), default=0.0)
    if top <= 0:
        return [0.0, 1.0]
    scale = 10.0 ** math.floor(math.log10(top))
    return [0.0, float(f"{next(r for r in _ROUND if r * scale >= top) * scale:.6g}")]


def memory_bars(results: Mapping[str, RunResult], pending: Sequence[str] = ()) -> Figure:
    """Host memory by category, one stacked bar per mode; one trace per category, always
    (named in CATEGORY_WORDS, the category's key in its `meta`).

    `pending`: modes still running, drawn as empty bars after the others (and named in
    the title) so that what is known shows at once.
    """
    modes = _modes_of(results, pending)
    mib = {cat: [_mib(results[m].bytes_by_category[cat]) if m in results else None
                 for m in modes] for cat in CATEGORIES}
    data = [{"type": "bar", "name": CATEGORY_WORDS[cat], "meta": cat, "x": modes,
             "y": mib[cat],
             "marker": {"color": CATEGORY_COLORS[cat]},
             "hovertemplate": f"{CATEGORY_WORDS[cat]}: %{{y:.2f}} MiB<extra>%{{x}} mode"
                              f"</extra>", **_BARS}
            for cat in CATEGORIES]
    scenario = next(iter(results.values())).scenario if results else None
    title = (f"Host memory, {scenario.guests} guests" if scenario else "Host memory")
    if any(m not in results for m in pending):
        title += f" ({', '.join(m for m in pending if m not in results)} running…)"
    stacks = [sum(ys[i] or 0.0 for ys in mib.values()) for i in range(len(modes))]
    return {"data": data, "layout": {"barmode": "stack", "title": {"text": title},
                                     "yaxis": {"title": {"text": "MiB"},
                                               "range": value_range(stacks), **_VALUE_AXIS},
                                     "legend": {"traceorder": "normal"}}}


def break_even(xs: Sequence[float], base: Sequence[float], other: Sequence[float]
               ) -> float | None:
    """The number of guests from which `other` costs no more than `base` (linear between points).

    xs[0] if `other` is already no dearer at the first point; None if it never gets there.
    """
    for i, (b, o) in enumerate(zip(base, other, strict=True)):
        if o <= b:
            if i == 0:
                return float(xs[0])
            # The lines cross between point i-1 and i.
            d0, d1 = other[i - 1] - base[i - 1], o - b
            return float(xs[i - 1] + (xs[i] - xs[i - 1]) * d0 / (d0 - d1))
    return None


def guests_curve(curve: Sequence[Comparison], modes: Sequence[str], guests: int | None = None,
                 baseline: str = "pagecache") -> Figure:
    """Host memory versus number of guests, one line per mode of MODES (empty if not shown).

    Annotated: where each mode breaks even with `baseline`; "summary" says what each
    saves at `guests`. A point may lack some modes (not computed
    yet): each line has the points it has. See guests_lines.
    """
    points = sorted(curve, key=lambda c: c.scenario.guests)
    lines = {m: ([c.scenario.guests for c in points if m in c.results],
                 [c.results[m].host_bytes for c in points if m in c.results]) for m in modes}
    return guests_lines(lines, modes, guests, baseline)


def guests_lines(lines: Mapping[str, tuple[Sequence[int], Sequence[int]]],
                 modes: Sequence[str], guests: int | None = None,
                 baseline: str = "pagecache", at: Mapping[str, int] | None = None) -> Figure:
    """guests_curve from (guest counts, host bytes) per mode: one trace per mode of MODES.

    What each mode saves at `guests` is not drawn in the figure but returned as HTML
    ("summary"; the dashboard shows it above the figure), from `at` (host bytes per mode
    at `guests`) if given, else from the lines: when the lines do not change (the
    dashboard draws them at guest counts that do not depend on the slider), moving the
    slider then leaves the figure alone. A marker, an annotation or even a new title
    would make plotly.js redraw it: 30–45 ms a move in the browser.
    """
    xs = {m: list(lines[m][0]) if m in modes and m in lines else [] for m in MODES}
    ys = {m: [_mib(b) for b in lines[m][1]] if m in modes and m in lines else []
          for m in MODES}
    data = [{"type": "scatter", "mode": "lines" if len(xs[m]) > 16 else "lines+markers",
             "name": m, "x": xs[m], "y": ys[m], "line": {"color": MODE_COLORS[m]},
             "visible": m in modes,
             "hovertemplate": f"{m}: %{{y:.1f}} MiB at %{{x}} guests<extra></extra>"}
            for m in MODES]
    annotations: list[dict[str, Any]] = []
    evens: dict[str, float | None] = {}
    savings: dict[str, float] = {}
    saved: list[str] = []
    base = dict(zip(xs.get(baseline, []), ys.get(baseline, []), strict=True))
    if baseline in modes and base:
        for m in modes:
            common = [(x, base[x], y) for x, y in zip(xs[m], ys[m], strict=True) if x in base]
            if m == baseline or not common:
                continue
            bx = [c[0] for c in common]
            evens[m] = be = break_even(bx, [c[1] for c in common], [c[2] for c in common])
            text = (f"{m}: never below {baseline} here" if be is None else
                    f"{m} breaks even at ≤ {be:g} guests" if be == bx[0] else
                    f"{m} breaks even at {be:.1f} guests")
            annotations.append({"text": text, "xref": "paper", "yref": "paper", "x": 0.01,
                                 "y": 0.99 - 0.07 * len(annotations), "showarrow": False,
                                 "xanchor": "left", "font": {"color": MODE_COLORS[m]}})
        if at is not None and guests is not None:  # the savings at the bars' count
            base = {guests: _mib(at[baseline])} if baseline in at else {}
            points = {m: {guests: _mib(at[m])} if m in at else {} for m in modes}
        else:
            points = {m: dict(zip(xs[m], ys[m], strict=True)) for m in modes}
        for m in modes:
            mine = points[m]
            if m == baseline or guests not in mine or guests not in base:
                continue
            b, y = base[guests], mine[guests]
            savings[m] = 1.0 - y / b if b else 0.0
            saved.append(f"<span style='color:{MODE_COLORS[m]}'>{m} saves {b - y:.1f} MiB "
                         f"({savings[m]:.0%})</span>")
    summary = ("" if guests is None else
               f"at {guests} guests{': ' if saved else ''}{' · '.join(saved)}")
    return {"data": data,
            "layout": {"title": {"text": "Host memory versus number of guests"},
                       "xaxis": {"title": {"text": "guests"}, "type": "linear",
                                 "rangemode": "tozero"},
                       "yaxis": {"title": {"text": "MiB"}}, "annotations": annotations,
                       "hovermode": "x"},
            "break_even": evens, "saving": savings, "summary": summary}


def faults_bars(results: Mapping[str, RunResult], pending: Sequence[str] = ()) -> Figure:
    """Major and minor faults per mode (left), disk reads in MiB (right): three traces.

    `pending`: modes still running, drawn as empty bars after the others."""
    modes = _modes_of(results, pending)
    tot = {m: r.totals for m, r in results.items()}

    def y(key: str, in_mib: bool = False) -> list[float | None]:
        return [None if m not in tot else _mib(tot[m][key]) if in_mib else tot[m][key]
                for m in modes]

    major, minor, disk = y("major_faults"), y("minor_faults"), y("disk_read_bytes", in_mib=True)
    data = [
        {"type": "bar", "name": "major faults", "x": modes,
         "y": major, "marker": {"color": "#d62728"},
         "hovertemplate": "%{y} major faults<extra>%{x} mode</extra>", **_BARS},
        {"type": "bar", "name": "minor faults", "x": modes,
         "y": minor, "marker": {"color": "#ff9896"},
         "hovertemplate": "%{y} minor faults<extra>%{x} mode</extra>", **_BARS},
        {"type": "bar", "name": "disk reads (MiB)", "x": modes, "xaxis": "x2", "yaxis": "y2",
         "y": disk, "marker": {"color": "#7f7f7f"},
         "hovertemplate": "%{y:.2f} MiB read from disk<extra>%{x} mode</extra>", **_BARS},
    ]
    scenario = next(iter(results.values())).scenario if results else None
    title = (f"Faults and disk reads (all {scenario.guests} guests)" if scenario
             else "Faults and disk reads (all guests)")
    return {"data": data, "layout": {
        "title": {"text": title}, "barmode": "group",
        "xaxis": {"domain": [0.0, 0.55]},
        "yaxis": {"title": {"text": "faults"},
                  "range": value_range([*major, *minor]), **_VALUE_AXIS},
        "xaxis2": {"domain": [0.7, 1.0], "anchor": "y2"},
        "yaxis2": {"anchor": "x2", "title": {"text": "MiB read from disk"},
                   "range": value_range(disk), **_VALUE_AXIS}}}


def dashboard_figures_data(results: Mapping[str, RunResult] | Comparison,
                           curve: Sequence[Comparison] = (), pending: Sequence[str] = ()
                           ) -> dict[str, Figure]:
    """The dashboard's three figures from model results: "memory", "guests" and "faults".

    `pending`: modes shown but still running (empty bars; the curve has the points known).
    """
    guests = None
    if isinstance(results, Comparison):
        guests = results.scenario.guests
        results = results.results
    modes = _modes_of(results, pending)
    if guests is None:
        guests = next(iter(results.values())).scenario.guests if results else None
    return {"memory": memory_bars(results, pending),
            "guests": guests_curve(curve, modes, guests),
            "faults": faults_bars(results, pending)}


# ── the memory map ────────────────────────────────────────────────────────────────────

@lru_cache(maxsize=8)
def block_owners(image: Ext2Image) -> dict[int, str]:
    """Reverse block map: image block → what it holds ("/bin/sh page 3", "IND of /bin/sh", …)."""
    out: dict[int, str] = {}
    sb = image.superblock
    out[0] = "boot block + superblock" if sb.s_first_data_block == 0 else "boot block"
    for g in range(image.groups_count):
        gd = image.group_desc(g)
        out[gd.bg_block_bitmap] = f"block bitmap of group {g}"
        out[gd.bg_inode_bitmap] = f"inode bitmap of group {g}"
        itb = -(-sb.s_inodes_per_group * image.inode_size // image.block_size)
        for b in range(gd.bg_inode_table, gd.bg_inode_table + itb):
            out[b] = f"inode table of group {g}"
    for dirpath, _, files in image.walk("/"):
        for name in sorted(files):
            path = dirpath.rstrip("/") + "/" + name
            if image.lstat(path).st_mode & L.S_IFMT != L.S_IFREG:
                continue
            for page, block in enumerate(image.block_map(path).tolist()):
                if block:
                    out.setdefault(int(block), f"{path} page {page}")
            for meta in image.metadata_blocks(path):
                out.setdefault(meta.block, f"{meta.kind} block of {path} "
                                           f"(from page {meta.logical})")
    return out


def _mappers(host: Host) -> dict[int, list[int]]:
    """Host frame → the guests whose EPT maps it (frames several guests can share only)."""
    pfns: list[npt.NDArray[np.int64]] = []
    gids: list[npt.NDArray[np.int64]] = []
    seg = host.segment
    for g in host.guests:
        frames = g.backing[g.backing >= 0]
        if seg is not None and g.dcss_mapped:
            frames = np.concatenate([frames, seg.frame_of[sorted(g.dcss_mapped)]])
        frames = np.unique(frames)
        pfns.append(frames)
        gids.append(np.full(len(frames), g.gid, dtype=np.int64))
    if not pfns:
        return {}
    p, q = np.concatenate(pfns), np.concatenate(gids)
    kinds = host.memory.kind[p]
    keep = np.isin(kinds, [FrameKind.SHARED, FrameKind.HOSTCACHE, FrameKind.KSM, FrameKind.ZERO])
    out: dict[int, list[int]] = {}
    for pfn, gid in zip(p[keep].tolist(), q[keep].tolist(), strict=True):
        out.setdefault(pfn, []).append(gid)
    return out


def _ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] → "0–2, 5"."""
    out: list[str] = []
    for v in sorted(values):
        if out and out[-1].split("–")[-1] == str(v - 1):
            out[-1] = out[-1].split("–")[0] + f"–{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def _owner_words(owner: int) -> str:
    return {OWNER_HOST: "the host", OWNER_SEGMENT: "the shared segment"}.get(owner,
                                                                             f"guest {owner}")


def _content_words(content: int, owners: Mapping[int, str]) -> str:
    if content == CONTENT_ZERO:
        return "zeroes"
    if content >= CONTENT_BLOCK:
        block = content - CONTENT_BLOCK
        return f"image block {block} = {owners.get(block, 'an unused block')}"
    return "private data (written by the guest)"


class FrameIndex:
    """What the memory map needs about every host frame: a snapshot of the host's arrays.

    Build it again after the host changed (the memory map builds one per widget).
    """

    def __init__(self, host: Host) -> None:
        mem = host.memory
        n = mem.frames
        self.kind = mem.kind[:n].copy()
        self.owner = mem.owner[:n].copy()
        self.refcount = mem.refcount[:n].copy()
        self.content = mem.content[:n].copy()
        self.owners = block_owners(host.image)
        self.mappers = _mappers(host)
        # How many frames hold the same content (page-cache copies repeated per guest).
        used = self.kind != FrameKind.FREE
        values, inverse, counts = np.unique(self.content, return_inverse=True,
                                            return_counts=True)
        del values
        self.copies = np.where(used & (self.content >= CONTENT_BLOCK), counts[inverse], 1)

    def describe(self, pfn: int) -> str:
        kind = FrameKind(int(self.kind[pfn]))
        if kind == FrameKind.FREE:
            return f"frame {pfn}: free"
        head = (f"frame {pfn}: {_KIND_WORDS[kind]}, owner {_owner_words(int(self.owner[pfn]))}, "
                f"refcount {int(self.refcount[pfn])}")
        parts = [head, "holds " + ("page-table entries" if kind == FrameKind.PAGETABLE else
                                   _content_words(int(self.content[pfn]), self.owners))]
        if int(self.copies[pfn]) > 1:
            parts.append(f"{int(self.copies[pfn])} frames on the host hold these bytes")
        mappers = self.mappers.get(pfn)
        if mappers:
            parts.append(f"mapped by guests {_ranges(mappers)}")
        return "<br>".join(parts)


def describe_frame(host: Host, pfn: int) -> str:
    """What host frame `pfn` holds: kind, owner, refcount, file and page, the guests mapping it.

    Lines are joined with "<br>" (plotly hover text).
    """
    if not 0 <= pfn < host.memory.frames:
        return f"frame {pfn}: never used"
    return FrameIndex(host).describe(pfn)


def _cell_colorscale() -> list[list[float | str]]:
    """Kind k occupies [k, k+1) of z; within it, light (refcount 1) to full (many users)."""
    nk = len(FrameKind)
    scale: list[list[float | str]] = []
    for k in FrameKind:
        base = KIND_COLORS[k]
        r, g, b = (int(base[i:i + 2], 16) for i in (1, 3, 5))
        light = tuple(int(c + (255 - c) * 0.55) for c in (r, g, b))
        scale.append([k / nk, f"rgb{light}"])
        scale.append([(k + 0.999) / nk, f"rgb({r}, {g}, {b})"])
    return scale


def memory_map_data(host: Host, start: int = 0, frames_per_cell: int = 1, cells: int = 2048,
                    columns: int = 64, index: Any = None) -> Figure:
    """A heat strip of host frames [start, start + cells·frames_per_cell), wrapped in rows.

    Top: coloured by kind, darker the more references (a shared-segment frame mapped by
    every guest is dark; a page-cache copy is light, and repeated once per guest). Bottom:
    the owner (guest number; -1 host, -2 segment). A cell of several frames shows the
    kind most of them have and sums them up in its hover text. Two heatmap traces.
    """
    idx: FrameIndex = index if index is not None else FrameIndex(host)
    n = len(idx.kind)
    per = max(1, int(frames_per_cell))
    rows = -(-cells // columns)
    cells = rows * columns
    lo = max(0, min(start, max(n - 1, 0)))
    pad = cells * per
    sl = slice(lo, min(n, lo + pad))
    # (cells, per) arrays: the frames of each cell; beyond the last frame, FREE and owner -3.
    kind: npt.NDArray[np.int64] = np.full((cells, per), FrameKind.FREE, dtype=np.int64)
    ref: npt.NDArray[np.int64] = np.zeros((cells, per), dtype=np.int64)
    owner: npt.NDArray[np.int64] = np.full((cells, per), -3, dtype=np.int64)
    used = sl.stop - sl.start
    kind.reshape(-1)[:used] = idx.kind[sl]
    ref.reshape(-1)[:used] = idx.refcount[sl]
    owner.reshape(-1)[:used] = idx.owner[sl]

    # Dominant non-free kind per cell (FREE only when the whole cell is free).
    counts = np.stack([(kind == k).sum(axis=1) for k in FrameKind], axis=1)
    nonfree = counts.copy()
    nonfree[:, FrameKind.FREE] = 0
    dom = np.where(nonfree.sum(axis=1) > 0, nonfree.argmax(axis=1), FrameKind.FREE)
    in_dom = kind == dom[:, None]
    dom_ref = np.where(in_dom, ref, 0).max(axis=1)
    max_ref = max(2, int(idx.refcount.max()) if n else 2)
    shade = np.log2(np.maximum(dom_ref, 1)) / np.log2(max_ref)
    z_kind = dom + 0.999 * np.clip(shade, 0.0, 1.0)
    dom_owner = [int(np.bincount(o[o >= -2] + 2).argmax()) - 2 if (o >= -2).any() else -3
                 for o in owner]
    z_owner: list[float | None] = [None if d == FrameKind.FREE else float(o)
                                   for d, o in zip(dom.tolist(), dom_owner, strict=True)]

    text: list[str] = []
    for c in range(cells):
        first = lo + c * per
        if first >= n:
            text.append("")
        elif per == 1:
            text.append(idx.describe(first))
        else:
            last = min(n, first + per) - 1
            parts = [f"{_KIND_WORDS[FrameKind(k)]}: {int(counts[c, k])}"
                     for k in np.flatnonzero(counts[c]).tolist() if k != FrameKind.FREE]
            text.append(f"frames {first}–{last}<br>" + "<br>".join(parts)
                        + f"<br>max refcount {int(ref[c].max())}")
    grid_text = [text[r * columns:(r + 1) * columns] for r in range(rows)]
    x = list(range(columns))
    y = [lo + r * columns * per for r in range(rows)]
    nk = len(FrameKind)
    data = [
        {"type": "heatmap", "z": z_kind.reshape(rows, columns).tolist(), "x": x, "y": y,
         "zmin": 0, "zmax": nk, "colorscale": _cell_colorscale(), "showscale": False,
         "text": grid_text, "hoverinfo": "text", "xaxis": "x", "yaxis": "y", "xgap": 1,
         "ygap": 1, "name": "kind"},
        {"type": "heatmap", "z": [z_owner[r * columns:(r + 1) * columns] for r in range(rows)],
         "x": x, "y": y, "colorscale": "Turbo",
         "zmin": -2, "zmax": max(1, len(host.guests) - 1), "showscale": True,
         "colorbar": {"title": {"text": "owner"}, "len": 0.45, "y": 0.22},
         "text": grid_text, "hoverinfo": "text", "xaxis": "x2", "yaxis": "y2", "xgap": 1,
         "ygap": 1, "name": "owner"},
    ]
    legend = " ".join(f"<span style='color:{KIND_COLORS[k]}'>■</span> {_KIND_WORDS[k]}"
                      for k in FrameKind if k != FrameKind.FREE)
    layout = {
        "title": {"text": f"Host frames {lo}–{lo + pad - 1} of {n} "
                          f"({per} frame{'s' if per > 1 else ''} a cell)"},
        "xaxis": {"domain": [0, 1], "anchor": "y", "showticklabels": False},
        "yaxis": {"domain": [0.52, 1], "autorange": "reversed", "title": {"text": "kind"}},
        "xaxis2": {"domain": [0, 1], "anchor": "y2", "showticklabels": False},
        "yaxis2": {"domain": [0, 0.46], "autorange": "reversed", "title": {"text": "owner"}},
        "annotations": [{"text": legend, "xref": "paper", "yref": "paper", "x": 0, "y": -0.08,
                         "showarrow": False, "xanchor": "left", "font": {"size": 10}}],
        "height": 620, "margin": {"b": 70},
    }
    return {"data": data, "layout": layout, "start": lo, "frames_per_cell": per,
            "frames": n, "text": text}


# ── the page walk ─────────────────────────────────────────────────────────────────────

def mapped_pages(guest: Guest, mm: MmStruct) -> list[tuple[str, int]]:
    """(label, virtual address) of every page `mm` maps, labelled with its VMA."""
    out = []
    for vpn in mm.pt.mapped_vpns().tolist():
        va = int(vpn) << PAGE_SHIFT
        vma = mm.find_vma(va)
        what = (f"{vma.name or '[anon]'} {vma.prot} page {vma.file_pgoff(va)}"
                if vma is not None and not vma.anonymous else
                f"{vma.name or '[anon]'} {vma.prot}" if vma is not None else "?")
        out.append((f"{va:#x} {what}", va))
    return out


def walk_data(guest: Guest, mm: MmStruct, va: int, host: Host | None = None) -> dict[str, Any]:
    """Translate `va` of process `mm` the way the MMU does, as rows to step through.

    Row 0 is the TLB lookup (not changing the TLB); then every memory reference of the
    nested walk (guest page-table entries, each behind a host EPT walk); then the frame.
    """
    p = guest.preset
    vpn = va >> p.page_shift
    hit = next((e for e in guest.tlb.contents() if e[1] == mm.asid and e[2] == vpn), None)
    rows: list[dict[str, Any]] = [{
        "stage": "TLB", "level": f"asid {mm.asid}", "entry": f"vpn {vpn:#x}",
        "value": f"hit → gpfn {hit[3]:#x}" if hit else "miss",
        "why": "a hit skips the walk; shown: the walk a miss makes"}]
    nw = nested_walk(mm.pt, guest.ept, va)
    for s in nw.steps:
        rows.append({"stage": "guest PT" if s.dim == "guest" else "EPT",
                     "level": s.step.level, "entry": f"[{s.step.index}] @ {s.step.addr:#x}",
                     "value": f"{s.step.pte:#x}", "why": s.why})
    frame_text = "no frame: " + (nw.fault.value if nw.fault else "?")
    pfn = None
    if nw.hpa is not None and nw.gpa is not None:
        pfn = nw.hpa >> PAGE_SHIFT
        frame_text = f"gPA {nw.gpa:#x} ({guest.describe_gpfn(nw.gpa >> p.page_shift)})"
        if host is not None:
            frame_text += "<br>" + describe_frame(host, pfn)
    rows.append({"stage": "frame", "level": "", "entry": f"hPA {nw.hpa:#x}" if nw.hpa else "",
                 "value": f"frame {pfn}" if pfn is not None else "fault", "why": frame_text})
    explain = [*mm.pt.walk(va).explain(), "", "nested (EPT) walk:", *nw.explain(), "",
               frame_text.replace("<br>", "\n")]
    return {"rows": rows, "explain": explain, "refs": nw.refs, "frame": pfn,
            "fault": nw.fault.value if nw.fault else None}


def walk_table(rows: Sequence[Mapping[str, Any]], current: int) -> Figure:
    """A table figure of walk rows with row `current` highlighted (one table trace)."""
    cols = ("stage", "level", "entry", "value", "why")
    fill = ["#ffe08a" if i == current else ("#f4f4f4" if i % 2 else "white")
            for i in range(len(rows))]
    return {"data": [{"type": "table", "columnwidth": [12, 10, 22, 20, 50],
                      "header": {"values": list(cols), "fill": {"color": "#ddd"}},
                      "cells": {"values": [[r[c] for r in rows] for c in cols],
                                "fill": {"color": [fill] * len(cols)}, "align": "left"}}],
            "layout": {"margin": {"l": 4, "r": 4, "t": 30, "b": 4}, "height": 560,
                       "title": {"text": f"step {current} of {len(rows) - 1}"}}}


# ── ext2 ──────────────────────────────────────────────────────────────────────────────

# Block classes of the image figure, in colour order.
BLOCK_CLASSES: Final = ("unused", "fs metadata", "other files", "this file's data",
                        "this file's IND/DIND/TIND")
_BLOCK_COLORS: Final = ("#f0f0f0", "#9467bd", "#c6dbef", "#2ca02c", "#d62728")


def regular_files(image: Ext2Image) -> list[str]:
    """Paths of the image's regular files, sorted."""
    out = []
    for dirpath, _, files in image.walk("/"):
        for name in files:
            path = dirpath.rstrip("/") + "/" + name
            if image.lstat(path).st_mode & L.S_IFMT == L.S_IFREG:
                out.append(path)
    return sorted(out)


def ext2_file_data(image: Ext2Image, path: str, columns: int = 64) -> dict[str, Any]:
    """superblock → group → inode → direct/indirect blocks → image blocks, for file `path`.

    "blocks": a heatmap figure of every image block (classes BLOCK_CLASSES);
    "superblock", "group", "inode": (field, value) rows; "pages": file page → block.
    """
    sb = image.superblock
    ino = image.lookup(path)
    inode = image.inode(ino)
    group = (ino - 1) // sb.s_inodes_per_group
    gd = image.group_desc(group)
    blocks = image.block_map(path)
    meta = image.metadata_blocks(path)
    owners = block_owners(image)
    n = sb.s_blocks_count
    cls = np.zeros(n, dtype=np.int64)
    for b, what in owners.items():
        if 0 <= b < n:
            cls[b] = 2 if what.startswith("/") or " of /" in what else 1
    cls[blocks[blocks > 0]] = 3
    for m in meta:
        cls[m.block] = 4
    rows = -(-n // columns)
    # Cells past the last block are None (a gap): NaN is not JSON, so widgets cannot send it.
    z: list[int | None] = [*cls.tolist(), *[None] * (rows * columns - n)]
    text = [f"block {b}: {owners.get(b, 'unused')}" if b < n else "" for b in range(rows * columns)]
    names = [f"i_block[{i}]" if i < L.EXT2_NDIR_BLOCKS else
             ("IND", "DIND", "TIND")[i - L.EXT2_NDIR_BLOCKS] for i in range(len(inode.i_block))]
    scale: list[list[float | str]] = []
    nc = len(BLOCK_CLASSES)
    for i, color in enumerate(_BLOCK_COLORS):
        scale += [[i / nc, color], [(i + 1) / nc, color]]
    fig = {"data": [{"type": "heatmap",
                     "z": [z[r * columns:(r + 1) * columns] for r in range(rows)],
                     "text": [text[r * columns:(r + 1) * columns] for r in range(rows)],
                     "hoverinfo": "text", "zmin": 0, "zmax": nc, "colorscale": scale,
                     "showscale": False, "xgap": 1, "ygap": 1,
                     "y": [r * columns for r in range(rows)]}],
           "layout": {"title": {"text": f"{path}: {int(np.count_nonzero(blocks))} data blocks, "
                                        f"{len(meta)} indirect blocks of {n}"},
                      "yaxis": {"autorange": "reversed", "title": {"text": "block"}},
                      "xaxis": {"showticklabels": False}, "height": 480,
                      "annotations": [{
                          "text": "  ".join(f"<span style='color:{c}'>■</span> {w}"
                                            for w, c in zip(BLOCK_CLASSES, _BLOCK_COLORS,
                                                            strict=True)),
                          "xref": "paper", "yref": "paper", "x": 0, "y": -0.08,
                          "showarrow": False, "xanchor": "left"}]}}
    return {
        "blocks": fig, "block_class": cls,
        "superblock": [(f, getattr(sb, f)) for f in (
            "s_inodes_count", "s_blocks_count", "s_free_blocks_count", "s_free_inodes_count",
            "s_first_data_block", "s_log_block_size", "s_blocks_per_group",
            "s_inodes_per_group", "s_magic", "s_rev_level", "s_first_ino", "s_inode_size",
            "s_feature_compat", "s_feature_incompat", "s_feature_ro_compat")],
        "group": [("group", group), *((f, getattr(gd, f)) for f in (
            "bg_block_bitmap", "bg_inode_bitmap", "bg_inode_table", "bg_free_blocks_count",
            "bg_free_inodes_count", "bg_used_dirs_count"))],
        "inode": [("inode", ino), ("i_mode", oct(inode.i_mode)),
                  ("i_size", image.file_size(ino)), ("i_blocks", inode.i_blocks),
                  *zip(names, inode.i_block, strict=True)],
        "pages": [(page, int(b)) for page, b in enumerate(blocks.tolist())],
        "metadata": [(m.kind, m.logical, m.block) for m in meta],
    }


# ── the timeline ──────────────────────────────────────────────────────────────────────

def timeline_data(result: RunResult) -> dict[str, Figure]:
    """Memory by category over time (stacked areas) and KSM catching up, from a RunResult.

    "memory": one trace per category; "ksm": pages_sharing over time if the result has it
    (result.extra["ksm_timeline"]), else the "ksm" category as a proxy.
    """
    t = (result.timeline_ns / 1e9).tolist()
    tb = result.timeline_bytes
    memory = {"data": [{"type": "scatter", "mode": "lines", "stackgroup": "memory",
                        "name": CATEGORY_WORDS[cat], "meta": cat, "x": t,
                        "y": (tb[:, i] / MIB).tolist(),
                        "line": {"color": CATEGORY_COLORS[cat], "width": 0.5},
                        "fillcolor": CATEGORY_COLORS[cat],
                        "hovertemplate": f"{CATEGORY_WORDS[cat]}: %{{y:.2f}} MiB at "
                                         f"%{{x:.3f}} s<extra></extra>"}
                       for i, cat in enumerate(CATEGORIES)],
              "layout": {"title": {"text": f"Host memory over time ({result.mode}, "
                                           f"{result.scenario.guests} guests)"},
                         "xaxis": {"title": {"text": "model seconds"}},
                         "yaxis": {"title": {"text": "MiB"}}}}
    series = result.extra.get("ksm_timeline")  # rows: samples; columns: KSM_TIMELINE_COLUMNS
    if series is not None:
        x = t
        y = np.asarray(series)[:, KSM_TIMELINE_COLUMNS.index("pages_sharing")].tolist()
        label = "pages_sharing"
    else:
        x, y = t, (tb[:, CATEGORIES.index("ksm")] / MIB).tolist()
        label = "KSM frames + rmap_items (MiB)"
    total = (tb.sum(axis=1) / MIB).tolist()
    ksm = {"data": [{"type": "scatter", "mode": "lines", "name": label, "x": x, "y": y,
                     "line": {"color": CATEGORY_COLORS["ksm"]},
                     "hovertemplate": f"{label}: %{{y}} at %{{x:.3f}} s<extra></extra>"},
                    {"type": "scatter", "mode": "lines", "name": "host total (MiB)", "x": t,
                     "y": total, "line": {"color": "black", "dash": "dot"}, "yaxis": "y2",
                     "hovertemplate": "host total: %{y:.2f} MiB at %{x:.3f} s"
                                      "<extra></extra>"}],
           "layout": {"title": {"text": "KSM catching up" if result.mode == "ksm"
                                else f"KSM (not running in {result.mode} mode)"},
                      "xaxis": {"title": {"text": "model seconds"}},
                      "yaxis": {"title": {"text": label}},
                      "yaxis2": {"overlaying": "y", "side": "right",
                                 "title": {"text": "host total (MiB)"}}}}
    faults = {"data": [{"type": "bar", "name": words, "meta": k,
                        "x": [p["guest"] for p in result.per_guest],
                        "y": [p[k] for p in result.per_guest],
                        "hovertemplate": f"guest %{{x}}: %{{y}} {words}<extra></extra>"}
                       for k, words in (("major_faults", "major faults"),
                                        ("minor_faults", "minor faults"),
                                        ("cow_faults", "CoW faults"))],
              "layout": {"title": {"text": "Faults per guest (in start order)"},
                         "barmode": "group", "xaxis": {"title": {"text": "guest"}}}}
    return {"memory": memory, "ksm": ksm, "faults": faults}
