"""Static figures: plain SVG that a notebook stores as its output, so the picture shows where
no kernel runs (GitHub, nbviewer, an HTML export) as well as live.

    bars(groups, series, title=…, ylabel=…)          stacked (or side by side) bars
    lines(series, title=…, xlabel=…, ylabel=…)       lines on linear axes, from zero (or steps)
    strip(cells, colors, title=…)                    one small box per block or page

Each returns an `Svg`, which Jupyter displays as image/svg+xml; every bar and point has a
<title> (the hover text a browser shows). Pure Python: no plotly, no matplotlib, no random
ids, so the same numbers give the same bytes (nbval compares them). The widgets stay for
exploring; a stored picture carries the lesson.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from xipmodel.lab.views import CATEGORY_COLORS, CATEGORY_WORDS, MODE_COLORS

__all__ = ["CATEGORY_WORDS", "Svg", "bars", "lines", "strip"]

PALETTE: Final = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
WIDTH, HEIGHT = 700, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 210, 34, 46
FONT: Final = "font-family='DejaVu Sans, Arial, sans-serif'"


@dataclass(frozen=True)
class Svg:
    """A static figure: its SVG text, shown by Jupyter as image/svg+xml."""

    text: str
    title: str

    def _repr_svg_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<static figure: {self.title}>"


def color_of(name: str, index: int) -> str:
    """A series' colour: the course's colour for a category or mode, else the palette's."""
    return CATEGORY_COLORS.get(name) or MODE_COLORS.get(name) or PALETTE[index % len(PALETTE)]


def _ticks(top: float) -> list[float]:
    """Round tick values from 0 to at least `top` (steps of 1, 2 or 5 × 10^k, ~5 ticks)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _num(v: float) -> str:
    """A tick label: no trailing zeros, thousands separated."""
    if abs(v - round(v)) < 1e-9:
        return f"{round(v):,}"
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start",
          extra: str = "") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' {FONT} "
            f"{extra}>{html.escape(s)}</text>")


def _frame(title: str, xlabel: str, ylabel: str, yticks: list[float]) -> list[str]:
    """The title, the y axis with its grid and labels, and the x axis label."""
    plot_h = HEIGHT - TOP - BOTTOM
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
           f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
           f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
           _text(LEFT, 20, title, 14, extra="font-weight='bold'")]
    top = yticks[-1]
    for t in yticks:
        y = TOP + plot_h * (1 - t / top)
        out.append(f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' "
                   "stroke='#dddddd'/>")
        out.append(_text(LEFT - 6, y + 4, _num(t), 11, "end"))
    out.append(_text(14, TOP + plot_h / 2, ylabel, 12, "middle",
                     f"transform='rotate(-90 14 {TOP + plot_h / 2:.1f})'"))
    out.append(_text(LEFT + (WIDTH - LEFT - RIGHT) / 2, HEIGHT - 8, xlabel, 12, "middle"))
    return out


def _legend(names: Sequence[str], colors: Sequence[str], dashed: Sequence[bool] = ()) -> list[str]:
    out = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        y = TOP + 8 + 18 * i
        x = WIDTH - RIGHT + 14
        dash = " stroke-dasharray='5 3'" if dashed and dashed[i] else ""
        out.append(f"<line x1='{x}' x2='{x + 18}' y1='{y}' y2='{y}' stroke='{color}' "
                   f"stroke-width='6'{dash}/>")
        out.append(_text(x + 24, y + 4, name, 11))
    return out


def bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str,
         ylabel: str, xlabel: str = "", stacked: bool = True, unit: str = "",
         words: Mapping[str, str] | None = None,
         colors: Mapping[str, str] | None = None) -> Svg:
    """One bar (stacked) or one bar per series (side by side) for each group.

    `series` maps a name to one value per group; `words` gives the legend's words for a
    name (CATEGORY_WORDS for host memory), `colors` a colour. Empty series are left out.
    """
    names = [n for n, vs in series.items() if any(v for v in vs)]
    fill = [(colors or {}).get(n) or color_of(n, i) for i, n in enumerate(names)]
    totals = ([sum(series[n][g] for n in names) for g in range(len(groups))] if stacked
              else [max((series[n][g] for n in names), default=0) for g in range(len(groups))])
    yticks = _ticks(max(totals, default=0))
    out = _frame(title, xlabel, ylabel, yticks)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(groups))
    scale = plot_h / yticks[-1]
    for g, group in enumerate(groups):
        x0 = LEFT + g * slot
        out.append(_text(x0 + slot / 2, HEIGHT - BOTTOM + 16, group, 11, "middle"))
        base = 0.0
        width = slot * 0.6 / (1 if stacked else max(1, len(names)))
        for i, (name, color) in enumerate(zip(names, fill, strict=True)):
            v = series[name][g]
            if v <= 0:
                continue
            x = x0 + slot * 0.2 + (0 if stacked else i * width)
            y = TOP + plot_h - (base + v) * scale
            tip = f"{group}: {(words or {}).get(name, name)} {_num(round(v, 2))} {unit}"
            out.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{width:.1f}' "
                       f"height='{v * scale:.1f}' fill='{color}'><title>"
                       f"{html.escape(tip.rstrip())}</title></rect>")
            if stacked:
                base += v
        if stacked:
            out.append(_text(x0 + slot / 2, TOP + plot_h - base * scale - 4,
                             f"{_num(round(base, 1))}", 10, "middle"))
    out += _legend([(words or {}).get(n, n) for n in names], fill)
    return Svg("\n".join([*out, "</svg>"]), title)


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
          xlabel: str, ylabel: str, dashed: Sequence[str] = (), markers: bool = True,
          unit: str = "", steps: bool = False,
          colors: Mapping[str, str] | None = None) -> Svg:
    """Lines on linear axes that start at zero; names in `dashed` are drawn dashed (fits).

    `steps`: each value holds until the next x (a timeline sampled where it changes), so
    the line runs flat and then up or down, never on a slope between two samples.
    `colors` gives a name its colour (else its first word's: a mode or a category).
    """
    names = list(series)
    palette = [(colors or {}).get(n) or color_of(n.split(" ")[0], i)
               for i, n in enumerate(names)]
    xmax = max((max(xs, default=0) for xs, _ys in series.values()), default=1)
    ymax = max((max(ys, default=0) for _xs, ys in series.values()), default=1)
    xticks, yticks = _ticks(xmax), _ticks(ymax)
    out = _frame(title, xlabel, ylabel, yticks)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * x / xticks[-1]

    def py(y: float) -> float:
        return TOP + plot_h * (1 - y / yticks[-1])

    for t in xticks:
        out.append(_text(px(t), HEIGHT - BOTTOM + 16, _num(t), 11, "middle"))
    for name, color in zip(names, palette, strict=True):
        xs, ys = series[name]
        corners = list(zip(xs, ys, strict=True))
        if steps:  # each value holds until the next x: a corner at (next x, this y)
            held = corners[:1]
            for x, y in corners[1:]:
                held += [(x, held[-1][1]), (x, y)]
            corners = held
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in corners)
        dash = " stroke-dasharray='6 4'" if name in dashed else ""
        out.append(f"<polyline points='{points}' fill='none' stroke='{color}' "
                   f"stroke-width='2'{dash}><title>{html.escape(name)}</title></polyline>")
        if markers and name not in dashed:
            for x, y in zip(xs, ys, strict=True):
                tip = f"{name}: {_num(x)}, {_num(round(y, 2))} {unit}".rstrip()
                out.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{color}'>"
                           f"<title>{html.escape(tip)}</title></circle>")
    out += _legend(names, palette, [n in dashed for n in names])
    return Svg("\n".join([*out, "</svg>"]), title)


def strip(cells: Sequence[str], colors: Mapping[str, str], *, title: str,
          hover: Sequence[str] | None = None, per_row: int = 32) -> Svg:
    """One box per cell (a block of an image, a page of a file), coloured by its kind."""
    size = min(18.0, (WIDTH - LEFT - RIGHT) / per_row)
    rows = math.ceil(len(cells) / per_row)
    kinds = list(dict.fromkeys(cells))
    height = max(TOP + rows * size + 30, TOP + 18 * len(kinds) + 20)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height:.0f}' "
           f"viewBox='0 0 {WIDTH} {height:.0f}'>",
           f"<rect width='{WIDTH}' height='{height:.0f}' fill='white'/>",
           _text(LEFT, 20, title, 14, extra="font-weight='bold'")]
    for i, kind in enumerate(cells):
        r, c = divmod(i, per_row)
        x, y = LEFT + c * size, TOP + r * size
        tip = hover[i] if hover else f"{i}: {kind}"
        out.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{size - 1:.1f}' "
                   f"height='{size - 1:.1f}' fill='{colors[kind]}'><title>"
                   f"{html.escape(tip)}</title></rect>")
        if c == 0:
            out.append(_text(LEFT - 6, y + size * 0.7, str(i), 10, "end"))
    out += _legend(kinds, [colors[k] for k in kinds])
    return Svg("\n".join([*out, "</svg>"]), title)
