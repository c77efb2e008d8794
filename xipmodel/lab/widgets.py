"""Controllers: ipywidgets wired to the views, FigureWidgets created once and updated in place.

    comparison_dashboard(scenario)   controls → memory by category, memory vs guests, faults
    memory_map(host)                 host frames as a heat strip, zoom and position sliders
    page_walk_explorer(host)         TLB → page-table levels → EPT → frame, step by step,
                                     page-cache mode and XIP mode side by side
    ext2_explorer(image)             superblock → group → inode → blocks of a file
    timeline(result)                 memory per category over time, KSM, faults per guest

Each returns an ipywidgets box; its `controller` attribute holds the object that
owns the widgets and figures (tests drive it from Python: `slider.value = 64`).

Stale figures (JUPYTER.md pitfall 3). A FigureWidget sends its updates to the
browser as one-off messages; its synced state (`_widget_data`, `_widget_layout`)
is only written when the figure is created or displayed. A view created later
(Voilà's default non-progressive mode, a browser reload in JupyterLab) then
draws the figure's *first* state. `update_figure` therefore refreshes that state
after every `batch_update()` (`refresh_bundle`), so a new view always draws the
current numbers; the cost is one full-state message per update (small here:
the memory map, the largest figure, sends ≤ 4096 cells).

Figures that stop moving. Our figures are `FigureWidget`, plotly's with a small
front-end module of its own (`_PLOTLY_LOADER`). anywidget 0.11 drops, for good, every
message a widget model receives if that model's front-end module has not been imported
and initialized within 2 s of the model's creation (the model's `ready` promise is then
rejected: "[anywidget] Failed to initialize model." in the browser console). plotly's
module is its whole 5 MB bundle, imported once per figure: on a loaded machine a page
that creates several figures at once (Voilà creates every model of the kernel at page
load) misses those 2 s, and the figures then never move again while the rest of the
dashboard does. The loader initializes at once and imports plotly's bundle when a
figure is first drawn, once per page (`_xip_plotly_id`, the bundle's digest). What is
left inside those 2 s is the page's own start (ipywidgets creating the other models and
views): notebook 01 in Voilà now keeps moving with Chromium's CPU slowed 6 times (plotly's
module as `_esm`: stuck at 4 times, and now and then on a busy 2-core machine).

Saved notebooks. A notebook saved with its widget state (JupyterLab's "Save Widget State
Automatically", nbconvert's store_widget_state) stores every model's state. The bundle
is therefore not a figure's state but that of one hidden model per kernel (PlotlyBundle,
`bundle_model`), gzip'd (1.9 MiB as base64 instead of 4.7 MiB), which each figure names
(`_xip_plotly`, "IPY_MODEL_<id>"); the loader asks the page's widget manager for that
model and unpacks the bundle (DecompressionStream). Pages that build models from the
kernel (JupyterLab, also after a reload; Voilà) or from a saved state get the bundle
model with the figures.

Speed. `update_figure` sends only what changed since the figure's last spec, as one
message (FigureWidget._send_update_msg: plotly.py sends four), made from the specs'
differences and sent before plotly.py validates them in the kernel (_update_msg: the
message plotly.py would make); `update_figures` sends several figures' changes and texts
that go with them as one message, which the browser draws in one frame, then the
figures' full states; the browser's figure views do not report their defaults back after
each redraw (the loader's `quiet`). What is left of a figure's update in the browser is
plotly.js's own redraw: any change of data redraws the whole figure (plotly's fast path,
Plotly.animate without a redraw, stacks bars wrongly), 10 ms for a trivial bar chart in
Chromium without a GPU, about as much for each of the dashboard's bar charts (views.py:
they ask plotly.js to measure no tick label, and their value axes mostly stay put between
neighbouring guest counts), so the dashboard redraws only the figures whose data change.
What is left of a move is the kernel's round trip, which the dashboard's frames skip: the
browser draws a count whose batch it was sent ahead (Dashboard, Shown, takeFrames); and
plotly.js's redraw of the bar charts, which the overlays take out of a move by one: each
view of a figure that frames move draws the slider's neighbours ahead, while the page is
idle, in hidden plots of their own laid over it, and a move shows them in its first frame
(the loader's overlays: 10-15 ms from the key, where the redraw alone took 35).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import html
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Final

import ipywidgets as W  # type: ignore[import-untyped]
import numpy as np
import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.io as pio  # type: ignore[import-untyped]
import traitlets
from plotly.basedatatypes import Undefined  # type: ignore[import-untyped]

from xipmodel.distro import default_image
from xipmodel.errors import ParameterError, XipModelError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import MODES, Comparison, Host, RunResult, Scenario
from xipmodel.lab import views
from xipmodel.lab.runs import RunCache, default_curve_guests, has_prefixes, line_of_run
from xipmodel.lab.uploads import UploadDir
from xipmodel.lab.views import Figure
from xipmodel.mm.guest import Guest
from xipmodel.workloads.recorded import TRACES
from xipmodel.workloads.sources import TRACE_PREFIX, is_trace, workload_trace
from xipmodel.workloads.synthetic import PROGRAMS

__all__ = [
    "MIXES",
    "FigureWidget",
    "PlotlyBundle",
    "bundle_model",
    "comparison_dashboard",
    "ext2_explorer",
    "memory_map",
    "page_walk_explorer",
    "refresh_bundle",
    "timeline",
    "update_figure",
    "update_figures",
]

Workload = str | tuple[tuple[str, float], ...]
MIXES: Final[dict[str, Workload]] = {
    "webserver": "webserver",
    "shell": "shell",
    "python": "python",
    "compiler": "compiler",
    "webserver + shell": (("webserver", 1.0), ("shell", 1.0)),
    "webserver + python + shell": (("webserver", 1.0), ("python", 1.0), ("shell", 1.0)),
    # The traces recorded from real programs (workloads/recorded.py), replayed as recorded.
    **{f"{name} (recorded trace)": TRACE_PREFIX + name for name in TRACES},
}
RAM_MIB: Final = (128, 256, 512, 1024, 2048, 4096)
# A SelectionSlider cannot hold None: -1.0 stands for heap_share=None (the program's own).
PROGRAM_DEFAULT: Final = -1.0
HEAP_SHARES: Final = (("program default", PROGRAM_DEFAULT),
                      *((f"{p}%", p / 100) for p in range(0, 91, 10)))
SHOW_PROGRESS_AFTER: Final = 0.5  # seconds: quicker updates show no progress bar


# ── in-place updates ────────────────────────────────────────────────────────────────────

def refresh_bundle(fig: Any) -> None:
    """Write a FigureWidget's synced state from its current data and layout (pitfall 3).

    What plotly's _repr_mimebundle_ does at display time, done after each update so that
    a view created later (Voilà, a reloaded page) does not show the first state. One
    message (hold_sync) for both.
    """
    with fig.hold_sync():
        fig._widget_layout = deepcopy(fig._layout_obj._props)
        fig._widget_data = deepcopy(fig._data)


# Each figure keeps the spec it drew last in this attribute (update_figure compares the
# next spec with it; figures are unhashable, so no dict keyed by figure).
_DRAWN: Final = "_xipmodel_drawn"
_ARRAYS: Final[tuple[str, ...]] = ("annotations", "shapes")  # layout lists replaced whole


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # e.g. numpy arrays: compare as changed
        return False


Changes = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]


def _diff(new: Mapping[str, Any], was: Mapping[str, Any]) -> dict[str, Any]:
    """The properties of `new` that differ from `was`: dicts compared key by key (plotly's
    update merges them so), anything else (lists too) whole."""
    out: dict[str, Any] = {}
    for k, v in new.items():
        if k not in was:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(was[k], Mapping):
            if inner := _diff(v, was[k]):
                out[k] = inner
        elif not _same(was[k], v):
            out[k] = v
    return out


_NOTHING: Final[Mapping[str, Any]] = {"data": (), "layout": {}}


def _between(spec: Mapping[str, Any], old: Mapping[str, Any]) -> Changes | None:
    """What differs between `spec` and `old` (a spec): each trace's changed properties,
    the changed layout keys, and the layout lists replaced whole (None: no change)."""
    traces = []
    for i, new in enumerate(spec["data"]):
        prev = old["data"][i] if i < len(old["data"]) else {}
        traces.append({k: v for k, v in _diff(new, prev).items() if k != "type"})
    layout = _diff(spec.get("layout", {}), old.get("layout", {}))
    arrays = {k: layout.pop(k) for k in _ARRAYS if k in layout}
    if not (any(traces) or layout or arrays):
        return None
    return traces, layout, arrays


def _changes(fig: Any, spec: Mapping[str, Any], volatile: Volatile | None = None
             ) -> Changes | None:
    """What differs between `spec` and the spec `fig` drew last (None: no change), and
    if anything does, the `volatile` properties (trace keys, layout keys) of `spec`,
    changed or not. `spec` becomes the spec drawn last."""
    old = getattr(fig, _DRAWN, None) or _NOTHING
    if len(spec["data"]) != len(fig.data):
        raise ValueError(f"update_figure: {len(spec['data'])} traces for a figure of "
                         f"{len(fig.data)}")
    changes = _between(spec, old)
    setattr(fig, _DRAWN, spec)
    if changes is None or volatile is None:
        return changes
    part = _volatile(spec, volatile)
    return ([{**t, **p} for t, p in zip(changes[0], part[0], strict=True)],
            {**changes[1], **part[1]}, {**changes[2], **part[2]})


def _volatile(spec: Mapping[str, Any], keys: Volatile) -> Changes:
    """The properties of `spec` named in `keys` (trace keys, layout keys), as Changes
    (annotations and shapes among the lists replaced whole)."""
    traces, layout = keys
    mine = {k: v for k, v in spec.get("layout", {}).items() if k in layout}
    return ([{k: v for k, v in t.items() if k in traces} for t in spec["data"]],
            {k: v for k, v in mine.items() if k not in _ARRAYS},
            {k: v for k, v in mine.items() if k in _ARRAYS})


def _paths(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A dict of properties as plotly's dotted paths: dicts merged key by key (what
    plotly.py's update does), anything else (lists too) set whole."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, Mapping):
            out.update(_paths(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _update_msg(changes: Changes) -> dict[str, Any]:
    """The Plotly.update message of `changes`, as plotly.py's batch_update sends it
    (FigureWidget._send_update_msg): restyle values per changed trace, in trace order,
    "_undefined_" where a trace leaves a property alone; relayout paths."""
    traces, layout, arrays = changes
    edits = {i: _paths(t) for i, t in enumerate(traces) if t}
    props = sorted({p for e in edits.values() for p in e})
    msg: dict[str, Any] = _plain({
        "style_data": {p: [e.get(p, Undefined) for e in edits.values()] for p in props},
        "layout_data": {**_paths(layout), **arrays}, "style_traces": list(edits),
        "source_view_id": None})
    return msg


def _put(fig: Any, changes: Changes) -> None:
    """Apply `changes` to the kernel's figure (plotly.py validates them); plotly.py's own
    message of them is dropped: the browser has them already (_update_msg)."""
    traces, layout, arrays = changes
    _COLLECTING.append([])
    try:
        with fig.batch_update():
            for trace, edits in zip(fig.data, traces, strict=True):
                if edits:
                    trace.update(edits)
            if layout:
                fig.layout.update(layout)
            for k, v in arrays.items():
                setattr(fig.layout, k, v)  # replaced whole: update() merges lists item by item
    finally:
        _COLLECTING.pop()


# While update_figures collects, FigureWidget._send_update_msg appends (figure, update)
# to the innermost list here instead of sending.
_COLLECTING: Final[list[list[tuple[Any, dict[str, Any]]]]] = []


Volatile = tuple[frozenset[str], frozenset[str]]  # trace keys, layout keys
Controls = tuple[tuple[str, str, Any], ...]  # (model id, trait, value) of widgets


@dataclass(frozen=True)
class Shown:
    """What a batch of figures and texts shows, at one value of a slider: `key` names it
    (the same content, the same key). Each of its figures (`volatile`: figure, keys) sends
    its volatile properties (trace keys, layout keys) whole, changed or not, and with the
    texts is tagged: the browser applies them only while `slider` is at `value` (else a
    later value's update is on its way) and skips what shows `key` already (a frame the
    browser drew itself, Dashboard's frames). A figure's volatile properties must hold
    every one in which two of its specs may differ: the update of one then draws it over
    any other (the browser may show another value's when it comes), and a skipped
    update loses nothing that a later one does not send again."""

    key: str
    slider: Any
    value: int
    volatile: tuple[tuple[Any, Volatile], ...]

    def of(self, fig: Any) -> Volatile | None:
        """The volatile properties of `fig` (None: not one of the batch's figures)."""
        return next((v for f, v in self.volatile if f is fig), None)

    def tags(self) -> dict[str, Any]:
        """The fields of a tagged item of a batch."""
        return {"key": self.key, "when": [self.slider.model_id, self.value]}


def update_figures(pairs: Sequence[tuple[Any, Mapping[str, Any]]],
                   texts: Sequence[tuple[Any, str]] = (), shown: Shown | None = None) -> None:
    """update_figure for several figures, and `texts` ((HTML widget, value) pairs) with
    them, in one message: the browser applies it in one task and draws it in one frame.
    (Each message is a task of its own, and the browser draws a frame between two when
    one is due: a figure new, the others and the text not yet, and a frame more to wait
    for.) The figures' synced states follow, which only a view created later reads.
    `shown`: the figures and texts it names are sent whole and tagged (see Shown).

    The message is made from the specs' differences and sent first; plotly.py then
    applies them to the kernel's figures while the browser draws (its validation was
    half of the kernel's time before the message, at a move of the dashboard's slider).
    A spec with a trace too many raises, the figures before it sent all the same; a value
    plotly.py refuses raises once the message went (plotly.js ignores it), and its figure
    counts as not drawn (the same spec is tried, and raises, again), as do the figures
    after it, which plotly.py never got.
    """
    changed: list[tuple[Any, Changes]] = []
    try:
        for fig, spec in pairs:
            volatile = shown.of(fig) if shown is not None else None
            if (changes := _changes(fig, spec, volatile)) is not None:
                changed.append((fig, changes))
    except BaseException:
        _show(changed, (), shown)  # sent all the same: what came before the spec that raised
        raise
    _show(changed, texts, shown)


def _show(changed: Sequence[tuple[Any, Changes]], texts: Sequence[tuple[Any, str]],
          shown: Shown | None) -> None:
    """Send the figures' changes and the texts (one message), then apply the changes to
    the kernel's figures and send their synced states."""
    if _send_batch([(fig, _update_msg(changes)) for fig, changes in changed], texts, shown):
        for w, v in texts:
            # The kernel's copy only: the browser has the value, or skipped it for a
            # later one (Shown), which a message of the widget's own, coming after the
            # batch or not (ipywidgets applies states in a promise chain of its own),
            # would overwrite.
            with w._lock_property(value=v):
                w.value = v
    else:
        for w, v in texts:
            w.value = v  # no batch carried it: the widget's own message
    for i, (fig, changes) in enumerate(changed):
        try:
            _put(fig, changes)
        except BaseException:
            for undrawn, _ in changed[i:]:  # not drawn in the kernel: the same spec again
                setattr(undrawn, _DRAWN, None)
            raise
        refresh_bundle(fig)


def _send_batch(updates: Sequence[tuple[Any, dict[str, Any]]],
                texts: Sequence[tuple[Any, str]], shown: Shown | None = None) -> bool:
    """The figures' updates, and the texts that go with them, as one message (texts
    tagged by `shown` always: the browser may show another value's); False if there
    is no update, and so no message."""
    if not updates:
        return False
    tags = {} if shown is None else shown.tags()
    batch = [{"model": fig.model_id, "update": update,
              **(tags if shown is not None and shown.of(fig) else {})}
             for fig, update in updates]
    batch += [{"model": w.model_id, "value": v, **tags} for w, v in texts
              if shown is not None or w.value != v]
    updates[0][0].send({"xip_batch": batch})
    return True


def update_figure(fig: Any, spec: Mapping[str, Any]) -> None:
    """Put `spec` (a view's figure dict, same traces as `fig`) into `fig`, in place.

    Only what changed since the spec the figure drew last is sent (do not mutate a spec
    after passing it); layout dicts are merged into the figure's, annotations and shapes
    replaced whole.
    """
    update_figures([(fig, spec)])


# What the browser's figure view reports back after each redraw (trace and layout
# deltas, events). ipywidgets 8 echoes every such update back to the browser by
# default: tens of KiB per redraw nobody reads. Traitlets' per-instance metadata
# (_NAME_metadata) switches the echo off for these traits of our figures only.
_JS2PY: Final = ("_js2py_traceDeltas", "_js2py_layoutDelta", "_js2py_restyle",
                 "_js2py_relayout", "_js2py_update", "_js2py_pointsCallback")


# The front-end module of our FigureWidget (see the module's docstring). anywidget imports
# it once per widget model: `initialize` only keeps the model, and the first view of a
# model imports plotly's bundle (once per page: later figures share the import) and
# hands the model and the view to plotly's own widget code. plotly's model-side code
# thus starts listening when the figure is first drawn; the kernel's messages before that
# change nothing in the browser's copy of `_widget_data` / `_widget_layout`, which our
# figures do not need: each update is followed by the full state (refresh_bundle).
# The bundle itself is the state of one PlotlyBundle model per kernel, which the figure's
# `_xip_plotly` names ("IPY_MODEL_<id>"): gzip, as base64, unpacked by the browser.
_PLOTLY_LOADER: Final = """\
const modules = (globalThis[Symbol.for("xipmodel.plotly-widget-modules")] ??= new Map());

async function bundleModel(model) {
  const id = model.get("_xip_plotly").slice("IPY_MODEL_".length);
  for (let tries = 0; ; tries++) {  // a page builds its models together: wait a little
    try {
      return await model.widget_manager.get_model(id);
    } catch (error) {
      if (tries >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function importBundle(model) {
  const gzip = (await bundleModel(model)).get("gzip_base64");
  const bytes = Uint8Array.from(atob(gzip), (c) => c.charCodeAt(0));
  const text = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const blob = await new Response(text).blob();
  const url = URL.createObjectURL(new Blob([blob], { type: "text/javascript" }));
  try {
    return quiet(await import(url));
  } finally {
    URL.revokeObjectURL(url);
  }
}

// After each redraw plotly's view reports the figure's full trace and layout defaults
// to the kernel (_sendTraceDeltas, _sendLayoutDelta): a deep merge and diff of the
// figure in the browser, and tens of KiB for the kernel to read, per figure and update,
// that nothing of ours reads. This copy of the module (ours alone) does not send them.
function quiet(module) {
  const view = module.FigureView?.prototype;
  if (view) {
    view._sendTraceDeltas = () => {};
    view._sendLayoutDelta = () => {};
  }
  return module;
}

// Figures' updates and texts sent as one message (update_figures), applied together in
// this task: the browser draws them in one frame. An update is handed to plotly's code
// as the trait plotly.py would have set, and reset, in messages of their own.
// A tagged item (Shown in widgets.py) names what it shows (`key`) and, from the kernel,
// the slider value it is for (`when`): it is skipped while the slider is elsewhere (that
// value's update is on its way, or drawn from a frame) or where `key` shows already.
const shownKeys = new WeakMap();  // model → the key of what it shows

const getModel = (model, id) => model.widget_manager.get_model(id).catch(() => null);

// What this module's code keeps for a figure model (`own`: its views' plotly divs, and
// whether plotly's code listens), asked of the widget manager's model, which get_model
// returns (anywidget hands `initialize` and `render` a proxy of it): "xip:own" answers.
function ownOf(target) {
  const owns = [];
  target.trigger("xip:own", (own) => owns.push(own));
  return owns;
}

async function applyBatch(model, batch) {
  const [models, sliders] = await Promise.all([
    Promise.all(batch.map((item) => getModel(model, item.model))),
    Promise.all(batch.map((item) => item.when && getModel(model, item.when[0])))]);
  batch.forEach((item, i) => {
    const target = models[i];
    if (target === null) return;
    if (item.when && sliders[i] && sliders[i].get("value") !== item.when[1]) return;
    if (item.key !== undefined && shownKeys.get(target) === item.key) return;
    // A figure whose plotly code does not listen yet drops the update (its first view
    // draws the synced state that follows): what it shows is not known.
    const drawn = item.key !== undefined
                  && (item.update === undefined || ownOf(target).some((own) => own.live));
    if (drawn) shownKeys.set(target, item.key);
    else shownKeys.delete(target);
    if (item.update === undefined) {
      target.set_state({ value: item.value });
    } else {
      target.set_state({ _py2js_update: item.update });
      target.set_state({ _py2js_update: null });
      uncover(target);
    }
  });
}

// Overlays. Each view of a figure that frames move draws the frames of the slider's
// neighbours ahead, while the page is idle, each in a plot of its own laid over the
// view's and hidden (the same data and layout as the view's, the frame's update applied:
// the same pixels). A move to a neighbour shows them, with the frame's texts, in the
// key's own task; after the frame that shows them, the figures themselves take the frame
// (as without overlays), and each overlay is hidden as its figure is drawn.
// An overlay is drawn from its figure as it was (`gen`): a change of the figure that sets
// more than frames set (another update, a legend click, a zoom: plotly's events say which
// properties) leaves its overlays unused.
//
// Shared by the module's copies (one per figure model): a batch, applied by the copy of the
// model that got it, names other figures. plotly.js is as the bundle set it.
const shared = (globalThis[Symbol.for("xipmodel.plotly-overlays")] ??= {
  covers: new WeakMap(),  // plotly div → {gen, showing, overlays: [{value, key, gen, div}]}
  Plotly: null,
});
const covers = shared.covers;

const elsOf = (target) => ownOf(target).flatMap((own) => [...own.views]);

function uncover(target) {
  for (const el of elsOf(target)) {
    const cover = covers.get(el);
    if (cover.showing) cover.showing.div.style.visibility = "hidden";
    cover.showing = null;
    delete el.xipShowing;
  }
}

// The paths an update sets, as plotly's events name them (a frame's update sets its
// figure's moving properties whole: an event naming only those changes no overlay).
function watch(el) {
  const cover = { gen: 0, showing: null, overlays: [], paths: new Set() };
  covers.set(el, cover);
  const check = (update) => {
    // (plotly.py's front end marks its own updates with _doNotReportToPy)
    if (Object.keys(update ?? {}).some((path) => path !== "_doNotReportToPy"
                                                 && !cover.paths.has(path))) cover.gen++;
  };
  el.on("plotly_restyle", (event) => check(event?.[0]));
  el.on("plotly_relayout", (event) => check(event));
  el.on("plotly_update", (event) => { check(event?.data?.[0]); check(event?.layout); });
}

function place(div, el) {
  div.style.left = `${el.offsetLeft}px`;
  div.style.top = `${el.offsetTop}px`;
}

function setPath(object, path, value) {
  const keys = path.split(".");
  const last = keys.pop();
  for (const key of keys) object = object[key] ??= {};
  if (value === null) delete object[last];
  else object[last] = structuredClone(value);
}

// The view's figure with `update` (a Plotly.update message, as plotly.py sends it) applied.
function withUpdate(el, update) {
  const data = structuredClone(el.data), layout = structuredClone(el.layout);
  const traces = update.style_traces ?? data.map((_, i) => i);
  for (const [path, values] of Object.entries(update.style_data ?? {})) {
    values.forEach((value, i) => {
      if (value !== "_undefined_" && value !== undefined) setPath(data[traces[i]], path, value);
    });
  }
  for (const [path, value] of Object.entries(update.layout_data ?? {})) {
    setPath(layout, path, value);
  }
  return [data, layout];
}

async function drawOverlay(target, el, value, item, wanted) {
  const cover = covers.get(el);
  for (const path of [...Object.keys(item.update.style_data ?? {}),
                      ...Object.keys(item.update.layout_data ?? {})]) cover.paths.add(path);
  // An overlay of this value, or one no neighbour wants (not the one showing), or a new one
  let overlay = cover.overlays.find((o) => o.value === value)
    ?? cover.overlays.find((o) => o !== cover.showing && !wanted.includes(o.value));
  if (overlay === undefined) {
    const div = document.createElement("div");
    div.className = "xip-overlay";
    div.setAttribute("aria-hidden", "true");  // a copy of the figure, not more content
    div.style.cssText = "position:absolute;visibility:hidden;pointer-events:none;z-index:1";
    el.after(div);
    overlay = { div };
    cover.overlays.push(overlay);
  }
  place(overlay.div, el);  // over the figure: it never reaches past the figure's box
  Object.assign(overlay, { value, key: null, gen: cover.gen });
  const [data, layout] = withUpdate(el, item.update);
  await shared.Plotly.react(overlay.div, data, layout,
                     { ...target.get("_config"), editSelection: false });
  overlay.key = item.key;
}

// The overlays of the frames next to the slider's value that are not drawn yet: one at a
// time, when the page is idle (a browser without requestIdleCallback: 50 ms later).
const preparing = new Set();  // tables whose neighbours may want overlays
const whenIdle = globalThis.requestIdleCallback ?? ((f) => setTimeout(f, 50));
let scheduled = false;

function prepare(table) {
  preparing.add(table);
  if (scheduled || shared.Plotly === null) return;
  scheduled = true;
  whenIdle(async () => {
    let drawn = null;
    try {
      drawn = await prepareOne();
    } finally {
      scheduled = false;
      if (drawn !== null) prepare(drawn);  // the next one, at the next idle time
      else preparing.clear();  // all drawn, or one failed: the next move tries again
    }
  });
}

// The views of `batch`'s figures ({item, target: the figure's model, el: the view's plotly
// div, cover}), each with its overlay drawn for `value` from the view as it is now
// (`overlay`, undefined if none is).
async function viewsOf(table, batch, value) {
  const out = [];
  for (const item of batch) {
    const target = item.update && await getModel(table.model, item.model);
    for (const el of target ? elsOf(target) : []) {
      const cover = covers.get(el);
      const overlay = cover.overlays.find(
        (o) => o.value === value && o.key === item.key && o.gen === cover.gen);
      out.push({ item, target, el, cover, overlay });
    }
  }
  return out;
}

// Draw one overlay that a table wants: its table, or null if none wants one.
async function prepareOne() {
  for (const table of preparing) {
    const value = table.slider.get("value");
    const wanted = [value + 1, value - 1];
    for (const n of wanted) {
      const batch = table.frames.get(n);
      if (batch === undefined || !table.same()) continue;
      for (const { item, target, el, overlay } of await viewsOf(table, batch, n)) {
        if (overlay === undefined) {
          await drawOverlay(target, el, n, item, wanted);
          return table;
        }
      }
    }
  }
  return null;
}

// Show the overlays of `batch` (all of them, drawn for the figures as they are) and its
// texts; false if one is missing (nothing changed then).
async function showOverlays(table, value, batch) {
  const shown = await viewsOf(table, batch, value);
  if (shown.length === 0 || shown.some(({ overlay }) => overlay === undefined)) return false;
  for (const { el, cover, overlay } of shown) {
    if (cover.showing) cover.showing.div.style.visibility = "hidden";
    place(overlay.div, el);
    overlay.div.style.visibility = "visible";
    cover.showing = overlay;
    el.xipShowing = overlay.div;  // what the page shows there (the bench's probes read it)
  }
  for (const item of batch) {
    if (item.update !== undefined) continue;
    const target = await getModel(table.model, item.model);
    if (target === null) continue;
    target.set_state({ value: item.value });
    shownKeys.set(target, item.key);
  }
  return true;
}

// Frames (Dashboard's): the batches of slider values whose results the kernel has, drawn
// here as soon as the slider moves to one, without waiting for the kernel (which still
// gets the move, and whose own batch for it is then skipped: the same key). A table is
// made for given values of the other controls (`controls`: [model id, trait, value]):
// while any of them shows another, its frames are not drawn.
const tables = new WeakMap();  // model → {version, controls, frames}

async function takeFrames(model, message) {
  let table = tables.get(model);
  if (table === undefined) {
    table = { version: -1, controls: null, frames: new Map(), model };
    tables.set(model, table);
    const slider = await getModel(model, message.slider);
    if (slider === null) {  // not made yet: the next message tries again
      tables.delete(model);
      return;
    }
    table.slider = slider;
    table.same = () => table.controls?.every(([c, name, v]) => c?.get(name) === v);
    slider.on("change:value", async () => {
      const value = slider.get("value");
      const batch = table.frames.get(value);
      prepare(table);  // the overlays of the new value's neighbours, when the page is idle
      if (batch === undefined || !table.same()) return;
      const covered = await showOverlays(table, value, batch);
      // The figures, in a task of their own: the browser draws the slider's handle at
      // its new place first (and the overlays: then after the frame that shows them),
      // and plotly.js then works in a page laid out already (a move is 4 ms shorter
      // than drawn in the key's own task).
      const later = (f) => (covered ? requestAnimationFrame(() => setTimeout(f)) : setTimeout(f));
      later(async () => {
        if (slider.get("value") !== value || !table.same()) return;
        await applyBatch(model, batch);
      });
    });
  }
  if (message.version < table.version) return;  // an older table, overtaken
  if (message.version !== table.version || message.reset) {
    table.version = message.version;
    table.frames = new Map();
    table.controls = null;  // no frame is drawn until they are known
    const models = await Promise.all(message.controls.map(([id]) => getModel(model, id)));
    if (table.version !== message.version) return;
    table.controls = message.controls.map(([, name, value], i) => [models[i], name, value]);
  }
  for (const [value, batch] of Object.entries(message.frames)) {
    table.frames.set(Number(value), batch);
  }
  prepare(table);
}

function plotlyModule(model) {
  const id = model.get("_xip_plotly_id");
  let module = modules.get(id);
  if (module === undefined) {
    module = importBundle(model);
    modules.set(id, module);
    module.catch(() => modules.delete(id));
  }
  return module;
}

export default () => {
  let model;   // the model as anywidget hands it to initialize (plotly's model code keeps it)
  const own = { views: new Set(), live: false };  // see ownOf
  let plotly;  // a promise of plotly's widget for this model, initialized
  return {
    initialize(context) {
      model = context.model;
      model.on("xip:own", (answer) => answer(own));
      model.on("msg:custom", (msg) => {
        if (msg?.xip_batch) applyBatch(model, msg.xip_batch);
        if (msg?.xip_frames) takeFrames(model, msg.xip_frames);
      });
      model.send({ xip_hello: true });  // a page made anew (a reload): the frames again
    },
    async render({ el }) {
      plotly ??= plotlyModule(model).then((module) => {
        const widget = typeof module.default === "function" ? module.default()
                                                            : module.default;
        widget.initialize({ model });
        own.live = true;
        return widget;
      }).catch((error) => {
        plotly = undefined;
        throw error;
      });
      const cleanup = await (await plotly).render({ el });
      shared.Plotly ??= globalThis.Plotly ?? null;  // set by the bundle's plotly.js
      watch(el);
      own.views.add(el);
      return () => {
        own.views.delete(el);
        for (const overlay of covers.get(el)?.overlays ?? []) {
          shared.Plotly.purge(overlay.div);
          overlay.div.remove();
        }
        covers.delete(el);
        if (typeof cleanup === "function") cleanup();
      };
    },
  };
};
"""


@functools.cache
def _plotly_bundle() -> tuple[str, str]:
    """A digest of plotly's own widget module (the text of go.FigureWidget._esm), and the
    module as base64 of its gzip (mtime 0: the same bytes in every kernel)."""
    text = str(go.FigureWidget._esm).encode()
    return (hashlib.sha256(text).hexdigest()[:16],
            base64.b64encode(gzip.compress(text, mtime=0)).decode())


class PlotlyBundle(W.Widget):  # type: ignore[misc]  # ipywidgets is untyped
    """A model with no view whose state is plotly's widget module, gzip'd, as base64.

    One per kernel (`bundle_model`), named by every FigureWidget: a notebook saved with
    its widget state carries the bundle once, whatever its number of figures.
    """

    gzip_base64 = traitlets.Unicode().tag(sync=True)

    @traitlets.default("gzip_base64")
    def _default_gzip_base64(self) -> str:
        return _plotly_bundle()[1]


_BUNDLE: Final[list[PlotlyBundle]] = []  # the kernel's PlotlyBundle, once created


def bundle_model() -> PlotlyBundle:
    """The kernel's PlotlyBundle, kept for the kernel's lifetime; a new one if it was
    closed (ipywidgets' close_all): figures made after that name the new one."""
    if not _BUNDLE or _BUNDLE[0].comm is None:
        _BUNDLE[:] = [PlotlyBundle()]
    return _BUNDLE[0]


class FigureWidget(go.FigureWidget):  # type: ignore[misc]  # plotly is untyped
    """plotly's FigureWidget whose front end is `_PLOTLY_LOADER` (see the module docstring).

    Same Python API, same class name (a figure's text repr is unchanged); its state also
    names the kernel's PlotlyBundle (`_xip_plotly`: plotly's bundle, what go.FigureWidget's
    `_esm` carries) and the bundle's digest (`_xip_plotly_id`: the browser imports each
    bundle once per page).
    """

    _esm = _PLOTLY_LOADER
    _xip_plotly = traitlets.Instance(PlotlyBundle).tag(sync=True, **W.widget_serialization)
    _xip_plotly_id = traitlets.Unicode().tag(sync=True)

    @traitlets.default("_xip_plotly")
    def _default_plotly(self) -> PlotlyBundle:
        return bundle_model()

    @traitlets.default("_xip_plotly_id")
    def _default_plotly_id(self) -> str:
        return _plotly_bundle()[0]

    def _send_update_msg(self, restyle_data: Any, relayout_data: Any,
                         trace_indexes: Any = None, source_view_id: Any = None) -> None:
        """plotly.py's Plotly.update message as one custom message, or a part of the one
        update_figures sends (plotly.py sends four: the trace and layout edit ids, which
        only plotly's own reports back would use, the update, the update reset to None);
        the loader hands it to plotly's code as the trait it replaces."""
        update = _plain({"style_data": restyle_data, "layout_data": relayout_data,
                         "style_traces": self._normalize_trace_indexes(trace_indexes),
                         "source_view_id": source_view_id})
        if _COLLECTING:
            _COLLECTING[-1].append((self, update))
        else:
            self.send({"xip_batch": [{"model": self.model_id, "update": update}]})


def _plain(value: Any) -> Any:
    """`value` as JSON can carry it (numpy arrays as lists, plotly's Undefined as its
    front end's "_undefined_"): what plotly's serializer of the update trait does, bar
    binary buffers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return "_undefined_" if value is Undefined else value


def _figure(spec: Mapping[str, Any]) -> Any:
    fig = FigureWidget({"data": spec["data"], "layout": spec["layout"]})
    for name in _JS2PY:
        if fig.has_trait(name):
            setattr(fig, f"_{name}_metadata", {"echo_update": False})
    setattr(fig, _DRAWN, spec)
    return fig


def _serially(lock: threading.RLock, handler: Callable[[Any], None]) -> Callable[[Any], None]:
    """`handler` (an observer's or a button's) holding `lock`: a controller's handlers run
    one at a time. ipykernel 7 handles some widgets' messages on a subshell's thread,
    others on the main thread (see Dashboard.update), so two controls changed while the
    kernel was busy would run their handlers at once."""
    def run(event: Any) -> None:
        with lock:
            handler(event)
    return run


def _box(children: Sequence[Any], controller: object, vertical: bool = True) -> Any:
    box = (W.VBox if vertical else W.HBox)(list(children))
    box.controller = controller
    return box


def _html_table(rows: Sequence[tuple[object, object]], title: str) -> str:
    body = "".join(f"<tr><td><code>{html.escape(str(k))}</code></td>"
                   f"<td style='text-align:right'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<b>{html.escape(title)}</b><table>{body}</table>"


# ── the comparison dashboard ────────────────────────────────────────────────────────────

# The properties of the dashboard's figures that change with the controls (trace keys,
# layout keys): each update sends them whole (Shown), each frame only them. The curve
# moves with the slider only given curve_guests (its value is then a point of it).
_VOLATILE: Final[dict[str, Volatile]] = {
    "memory": (frozenset({"x", "y"}), frozenset({"title", "yaxis"})),
    "faults": (frozenset({"x", "y"}), frozenset({"title", "yaxis", "yaxis2"})),
    "guests": (frozenset({"x", "y", "mode", "visible"}), frozenset({"annotations"})),
}
# Layout keys of a template for subplots, colour scales, shapes and annotations, none of
# which a bar chart of categories has.
_NOT_BARS: Final = frozenset({"polar", "ternary", "scene", "geo", "mapbox", "map", "smith",
                              "coloraxis", "colorscale", "shapedefaults",
                              "annotationdefaults"})


def bars_template() -> dict[str, Any]:
    """plotly's default template (plotly.io.templates.default) cut to what a chart of
    bars reads: its layout less other kinds of subplot and colour scales, and its bar
    traces' defaults. Same pixels; plotly.js works the template into every redraw (the
    whole default: about 3 ms more for the dashboard's two bar charts, on a plain page)."""
    name = pio.templates.default
    if not name or name == "none":
        return {}
    full = pio.templates[name].to_plotly_json()
    return {"layout": {k: v for k, v in full.get("layout", {}).items() if k not in _NOT_BARS},
            "data": {k: v for k, v in full.get("data", {}).items() if k == "bar"}}


class Dashboard:
    """The controller of comparison_dashboard: controls, a RunCache, three FigureWidgets.

    Runs. The cache's `reach` is the slider's maximum (or `reach`), so the first update
    grows one run per shown mode to that many guests, with the progress bar; every
    other position of the slider is then answered from those runs without running a
    guest (see runs.py): a prefix, plus for ksm ksmd's scan after the last start,
    counted in bulk (a few ms). The guests curve has points that do not depend on the
    slider (every count up to the reach, read off the runs' timelines; ksm the powers of
    two), so a move redraws the two bar charts only; what each mode saves at the
    slider's value is in `summary`, an HTML line above the curve, sent with the bar
    charts' changes in one message (update_figures: drawn in one frame). A count past
    a run's length grows it by the guests missing (continued, not started over), and
    after each update the slider's neighbours are readied while the browser draws
    (_prefetch).

    Frames. After each update the browser also gets the frames of the slider's value
    and its neighbours (_send_frames: what the moving figures and the summary show
    there, for the controls as they are): a move to one is drawn in the browser at once,
    without the kernel's round trip (about 20 ms here), while the kernel still gets the
    move; its own batch for it names the same key, and the browser skips it (Shown).
    A move elsewhere, or with another control changed, waits for the kernel as before.
    The page draws the neighbours' frames ahead, when it is idle, in hidden overlays of
    the figures (the loader's): a move to one shows them in its next frame, and the
    figures then take the frame behind them.

    Showing dax, or another workload, RAM or heap share,
    costs one such run per mode. Only ksm with guests started apart (start_interval_ms
    > 0) runs per guest count, on demand, and the update then draws twice: at once with
    what is known (an empty ksm bar named in the title), again when ksm is done.

    In a Jupyter kernel the first computation waits until the cell that built the
    dashboard has run (post_run_cell): the box is on screen by then and shows the
    progress bar. Reading `figures`, or changing a control, computes it at once.
    """

    def __init__(self, scenario: Scenario, image: Ext2Image | None, max_guests: int,
                 mixes: Mapping[str, Workload], cache: RunCache | None,
                 curve_guests: Sequence[int] | None, defer: bool | None,
                 reach: int | None = None) -> None:
        self.cache = cache if cache is not None else RunCache(image)
        self.base = scenario
        self.curve_guests = curve_guests
        mixes = {k: v for k, v in mixes.items() if _runnable(v, image)}
        if scenario.workload not in mixes.values():
            mixes = {"this scenario's": scenario.workload, **mixes}
        self.guests_slider = W.IntSlider(value=scenario.guests, min=1,
                                         max=max(max_guests, scenario.guests),
                                         description="guests", continuous_update=False)
        self.top = self.guests_slider.max if reach is None else max(reach, 1)
        self.cache.reach = max(self.cache.reach, self.top)
        self.mix = W.Dropdown(options=list(mixes.items()), value=scenario.workload,
                              description="workload")
        self.ram = W.SelectionSlider(options=[(f"{r} MiB", r) for r in
                                              sorted({*RAM_MIB, scenario.guest_ram_mib})],
                                     value=scenario.guest_ram_mib, description="guest RAM",
                                     continuous_update=False)
        shares = list(HEAP_SHARES)
        heap = PROGRAM_DEFAULT if scenario.heap_share is None else scenario.heap_share
        if heap not in [v for _, v in shares]:
            shares = sorted([*shares, (f"{heap:.0%}", heap)], key=lambda o: o[1])
        self.heap = W.SelectionSlider(options=shares, value=heap,
                                      description="heap share", continuous_update=False)
        self.mode_buttons = {m: W.ToggleButton(value=m in ("pagecache", "xip", "ksm"),
                                               description=m, tooltip=f"show {m} mode")
                             for m in MODES}
        self.upload = W.FileUpload(accept=".npz", multiple=False, description="upload trace",
                                   tooltip="a trace recorded with python -m xipmodel record "
                                           "(.npz), as the workload")
        self.upload_status = W.Label(value="")
        self.uploads: UploadDir | None = None  # made on the first upload
        self._holding = False  # the controller itself is changing controls
        self.progress = W.IntProgress(value=0, min=0, max=1, description="running…",
                                      layout=W.Layout(visibility="hidden"))
        self.status = W.Label(value="computing…")
        # What each mode saves at the slider's value (HTML: redrawn at no cost).
        self.summary = W.HTML(value="")
        self.last_update_s = 0.0
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()
        self._filled = False
        self._updating = threading.RLock()  # see update
        # The browser's frames (_send_frames): of which controls, the version, by count.
        self._table: tuple[Scenario, tuple[str, ...], Controls] | None = None
        self._version = 0
        self._frames: dict[int, list[dict[str, Any]]] = {}
        specs = views.dashboard_figures_data({}, (), self.modes())
        self._figures = {k: _figure(v) for k, v in specs.items()}
        for k, (width, height) in {"memory": (560, 440), "faults": (560, 440),
                                   "guests": (1100, 440)}.items():
            self._figures[k].update_layout(width=width, height=height)
            if k != "guests":
                self._figures[k].layout.template = bars_template()
            refresh_bundle(self._figures[k])
        self._figures["memory"].on_msg(self._hello)
        for w in (self.guests_slider, self.mix, self.ram, self.heap,
                  *self.mode_buttons.values()):
            w.observe(self._changed, names="value")
        self.upload.observe(self._uploaded, names="value")
        controls = W.VBox([W.HBox([self.guests_slider, self.mix]),
                           W.HBox([self.upload, self.upload_status]),
                           W.HBox([self.ram, self.heap]),
                           W.HBox([W.Label("modes"), *self.mode_buttons.values()]),
                           W.HBox([self.progress, self.status])])
        self.widget = _box([controls, W.HBox([self._figures["memory"],
                                              self._figures["faults"]]),
                            self.summary, self._figures["guests"]], self)
        events = _kernel_events() if defer is None or defer else None
        if events is None:
            self.update()
            return

        def fill(*_: object) -> None:
            events.unregister("post_run_cell", fill)
            self.ensure()

        events.register("post_run_cell", fill)

    @property
    def figures(self) -> dict[str, Any]:
        """The FigureWidgets "memory", "faults" and "guests" (computed first if need be)."""
        self.ensure()
        return self._figures

    def ensure(self) -> None:
        """Compute and draw the first state, if no update has yet."""
        if not self._filled:
            self.update()

    def scenario(self) -> Scenario:
        """The scenario the controls describe."""
        return self.base.replace(guests=self.guests_slider.value, workload=self.mix.value,
                                 guest_ram_mib=self.ram.value,
                                 heap_share=(None if self.heap.value == PROGRAM_DEFAULT
                                             else self.heap.value))

    def modes(self) -> list[str]:
        """Modes switched on (pagecache if none is)."""
        return [m for m, b in self.mode_buttons.items() if b.value] or ["pagecache"]

    def _curve_points(self, mode: str, guests: int) -> list[int]:
        """The guest counts of `mode`'s line on the guests curve.

        Given `curve_guests`: those and `guests` (the slider's value). Otherwise counts
        that do not depend on the slider, up to the runs' reach (the slider's maximum),
        so that the curve stays put while the slider moves (one figure fewer to redraw
        in the browser; what each mode saves at the slider's value is in `summary`): a
        mode whose line is read off one run has every count, ksm the powers of two and
        the reach.
        """
        if self.curve_guests is not None:
            return sorted({*self.curve_guests, guests})
        if line_of_run(mode):
            return list(range(1, self.top + 1))
        return default_curve_guests(self.top)

    def _progress(self, done: int, total: int, what: str) -> None:
        """Show the bar only once a computation has taken SHOW_PROGRESS_AFTER seconds."""
        if time.perf_counter() - self._started < SHOW_PROGRESS_AFTER:
            return
        self.progress.layout.visibility = "visible"
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.status.value = f"running… {what}"

    def _hide_progress(self) -> None:
        self.progress.layout.visibility = "hidden"

    def _changed(self, change: object = None) -> None:
        if not self._holding:
            self.update()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Change controls without an update per change."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _uploaded(self, change: Mapping[str, Any]) -> None:
        """FileUpload's value: the files chosen (ipywidgets 8: name, size, content…)."""
        files = change["new"]
        if not files:
            return
        self.upload.value = ()  # choosing the same file again loads it again
        for f in files:
            self.load_upload(str(f["name"]), f["content"])

    def load_upload(self, name: str, content: bytes | memoryview) -> bool:
        """Make the uploaded trace `content` (a file named `name`) the workload, True once
        the figures show it. A file that is not a trace (or too big, or that the model
        cannot run) leaves the controls and figures as they were, and `upload_status`
        says why in one line (uploads.py)."""
        if self.uploads is None:
            self.uploads = UploadDir()
        self.upload_status.value = f"reading {name}…"
        try:
            workload = self.uploads.store(name, content)
        except XipModelError as exc:
            self.upload_status.value = f"✗ {exc}"
            return False
        options, before = self.mix.options, self.mix.value
        self.upload_status.value = f"{name}: a trace; running it…"
        # Its image is built before the first guest reports progress (about a second).
        self.progress.value, self.progress.layout.visibility = 0, "visible"
        self.status.value = f"building the image of {name}…"
        try:
            with self._hold():
                if workload not in [v for _, v in options]:
                    self.mix.options = [*options, (_upload_label(name, options), workload)]
                self.mix.value = workload
            self.update()
        except XipModelError as exc:
            with self._hold():
                self.mix.options, self.mix.value = options, before
            self.update()
            self.upload_status.value = f"✗ {name}: {' '.join(str(exc).split())}"
            return False
        trace = workload_trace(workload)
        self.upload_status.value = (f"✓ {name}: trace {trace.name!r}, {len(trace.maps)} "
                                    f"maps, {len(trace):,} page accesses")
        return True

    def _lines(self, s: Scenario, modes: Sequence[str]) -> dict[str, tuple[list[int], list[int]]]:
        return {m: self.cache.line(s, m, self._curve_points(m, s.guests)) for m in modes}

    def _specs(self, s: Scenario, modes: Sequence[str],
               lines: Mapping[str, tuple[Sequence[int], Sequence[int]]],
               pending: Sequence[str] = ()) -> tuple[Figure, Figure, Figure, str]:
        """The bars, the curve and the summary of `s`, from what the cache knows."""
        results = self.cache.known(s, modes).results
        curve = views.guests_lines(lines, modes, s.guests,
                                   at={m: r.host_bytes for m, r in results.items()})
        return (views.memory_bars(results, pending), views.faults_bars(results, pending),
                curve, f"<b>{curve['summary']}</b>")

    def _moving(self) -> tuple[str, ...]:
        """The figures that change with the slider's value (the curve, given curve_guests)."""
        return ("memory", "faults") + (("guests",) if self.curve_guests is not None else ())

    def _frame(self, specs: Mapping[str, Figure], summary: str) -> list[dict[str, Any]]:
        """The frame of these specs and summary: the moving figures' volatile properties
        and the summary, each item with the same key, a digest of them all (the same
        content, the same key, whatever the controls or count that made it)."""
        items: list[dict[str, Any]] = [
            *({"model": self._figures[k].model_id,
               "update": _update_msg(_volatile(specs[k], _VOLATILE[k]))}
              for k in self._moving()),
            {"model": self.summary.model_id, "value": summary}]
        key = hashlib.blake2b(json.dumps(items, sort_keys=True).encode(),
                              digest_size=12).hexdigest()
        return [{**item, "key": key} for item in items]

    def _draw(self, s: Scenario, modes: Sequence[str], pending: Sequence[str] = ()) -> None:
        """Redraw the three figures in place from what the cache knows."""
        memory, faults, curve, summary = self._specs(s, modes, self._lines(s, modes), pending)
        key = self._frame({"memory": memory, "faults": faults, "guests": curve},
                          summary)[0]["key"]
        shown = Shown(key, self.guests_slider, s.guests,
                      tuple((self._figures[k], _VOLATILE[k]) for k in self._moving()))
        # The text with the figures, in one message: the browser never shows a guest
        # count in one that the other does not show yet.
        update_figures([(self._figures["memory"], memory), (self._figures["faults"], faults),
                        (self._figures["guests"], curve)],
                       texts=[(self.summary, summary)], shown=shown)

    def _send_frames(self, s: Scenario, modes: Sequence[str]) -> None:
        """Send the browser the frames of the slider's value and its neighbours that it
        has not got, whose results are known (see the loader's takeFrames): a move by
        one, or back, is then drawn in the browser at once."""
        new: dict[int, list[dict[str, Any]]] = {}
        lines = None if self.curve_guests is not None else self._lines(s, modes)
        for n in (s.guests - 1, s.guests, s.guests + 1):
            sn = s.replace(guests=n) if 1 <= n <= self.guests_slider.max else None
            if (sn is None or n in self._frames
                    or len(self.cache.known(sn, modes).results) < len(modes)):
                continue
            memory, faults, curve, summary = self._specs(sn, modes,
                                                         lines or self._lines(sn, modes))
            new[n] = self._frame({"memory": memory, "faults": faults, "guests": curve},
                                 summary)
        self._frames.update(new)
        if new:
            self._send_table(new)

    def _controls(self) -> Controls:
        """The other controls as the browser's models hold them: (model id, trait, value)."""
        return ((self.mix.model_id, "index", self.mix.index),
                (self.ram.model_id, "index", self.ram.index),
                (self.heap.model_id, "index", self.heap.index),
                *((b.model_id, "value", b.value) for b in self.mode_buttons.values()))

    def _send_table(self, frames: Mapping[int, Any], reset: bool = False) -> None:
        """Frames, with the controls they were made for (those of the version)."""
        assert self._table is not None
        self._figures["memory"].send({"xip_frames": {
            "version": self._version, "slider": self.guests_slider.model_id,
            "controls": self._table[2], "frames": frames, "reset": reset}})

    def _hello(self, _: object, content: object, buffers: object = None) -> None:
        """A page made the figure's model anew (a reload): it has no frames."""
        if isinstance(content, dict) and content.get("xip_hello"):
            with self._updating:
                if self._frames:
                    self._send_table(dict(self._frames), reset=True)

    def update(self) -> None:
        """Recompute what the controls ask for (only what the cache does not know), redraw.

        One update at a time: ipykernel 7 handles some widgets' messages on a subshell's
        thread (JupyterLab sends the slider's there), others on the main thread, so two
        controls changed together (the kernel busy meanwhile) ran two updates at once,
        each drawing with the other's half-made state."""
        with self._updating:
            self._filled = True
            try:
                self._update()
            except BaseException:
                self._filled = False
                self._hide_progress()
                raise

    def _jobs(self, s: Scenario, modes: Sequence[str]) -> list[tuple[Scenario, str]]:
        """The (scenario, mode) results the figures need. A mode whose curve is read off
        its run needs one result, the largest count (the cache grows the run to its
        reach, the slider's maximum unless given: the first update precomputes every
        position); ksm one per curve point."""
        jobs = []
        for m in modes:
            if line_of_run(m):
                counts = {max([s.guests, *(self.curve_guests or ())])}
            else:
                counts = {s.guests, *self._curve_points(m, s.guests)}
            jobs += [(s.replace(guests=n), m) for n in sorted(counts)]
        return jobs

    def _update(self) -> None:
        self._started = t0 = time.perf_counter()
        runs = self.cache.runs
        controls = self._controls()
        s, modes = self.scenario(), self.modes()
        # A control changed meanwhile (on another thread, see update: its own update
        # waits) leaves this update without frames, which would be labelled wrongly.
        steady = controls == self._controls()
        if (table := (s.replace(guests=1), tuple(modes), controls)) != self._table:
            # Other controls: the browser's frames are of other results (a new version).
            self._table, self._version, self._frames = table, self._version + 1, {}
        self.heap.disabled = all(is_trace(n) for n, _ in s.mix)  # a trace is replayed as is
        jobs = self._jobs(s, modes)
        # Modes with prefixes first: one run per family at most (at the slider's maximum).
        self.cache.run_many([j for j in jobs if has_prefixes(j[1], j[0])], self._progress)
        pending = [m for m in modes if self.cache.plan([j for j in jobs if j[1] == m])]
        t1 = time.perf_counter()
        if pending:
            self._draw(s, modes, pending)  # what is known, at once
            self.status.value = f"running {', '.join(pending)}…"
        self.cache.run_many(jobs, self._progress)
        t2 = time.perf_counter()
        self._draw(s, modes)
        self._hide_progress()
        t3 = time.perf_counter()
        self.timings = {"known": t1 - t0, "pending": t2 - t1, "draw": t3 - t2,
                        "total": t3 - t0}
        self.last_update_s = t3 - t0
        self.status.value = (f"updated in {self.last_update_s:.2f} s "
                             f"({self.cache.runs - runs} new runs)")
        self._prefetch(s, modes)
        if steady:
            self._send_frames(s, modes)

    def _prefetch(self, s: Scenario, modes: Sequence[str]) -> None:
        """Ready the results of the slider's neighbours (a ksm result, a guest more past
        the runs): done while the browser draws this update, so that a move by one (the
        arrow keys, a drag) finds them made. Only what a family answers (tens of ms);
        a bad neighbour (a host that fills up) is left for its own update to report."""
        for n in (s.guests + 1, s.guests - 1):
            if 1 <= n <= self.guests_slider.max:
                with contextlib.suppress(ParameterError):
                    self.cache.run_many([(s.replace(guests=n), m) for m in modes
                                         if has_prefixes(m, s)])


def _kernel_events() -> Any:
    """IPython's event manager when running in a Jupyter kernel, else None."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return shell.events


def _runnable(workload: Workload, image: Ext2Image | None) -> bool:
    """Can the mix run on `image` (None: the embedded one)? A program needs its binary
    there (not every preset binary is in every image); a trace builds its own image
    unless one is given, which must then hold every file the trace maps."""
    names = [workload] if isinstance(workload, str) else [n for n, _ in workload]
    for n in names:
        if is_trace(n):
            if image is not None and not all(map(image.exists, workload_trace(n).files())):
                return False
        elif n not in PROGRAMS or not (image if image is not None else default_image()
                                       ).exists(PROGRAMS[n].binary):
            return False
    return True


def _upload_label(name: str, options: Sequence[tuple[str, object]]) -> str:
    """The workload menu's label of an upload: its file name, numbered if taken."""
    labels = {label for label, _ in options}
    label, k = f"{name} (uploaded)", 1
    while label in labels:
        k += 1
        label = f"{name} (uploaded #{k})"
    return label


def comparison_dashboard(scenario: Scenario | None = None, *, image: Ext2Image | None = None,
                         max_guests: int = 256, mixes: Mapping[str, Workload] = MIXES,
                         cache: RunCache | None = None,
                         curve_guests: Sequence[int] | None = None,
                         defer: bool | None = None, reach: int | None = None) -> Any:
    """A box of controls and figures comparing the modes for one scenario.

    `curve_guests`: the points of the memory-versus-guests curve (default: powers of two
    up to the slider's value, and the value). Runs are cached in `cache` (a RunCache,
    whose reach becomes at least `reach`, default `max_guests`): each shown mode runs
    once at that many guests, and every slider position up to it is answered from that
    run without running a guest; a position past it grows the run (a few ms a guest
    when guests repeat a variant). A smaller `reach` builds the dashboard sooner.
    `defer`: compute the first state after the cell has run (None: in a Jupyter kernel,
    so that the progress bar is on screen), or at once (False).

    The workload menu holds `mixes` (default: the program models and the shipped traces)
    that can run on `image`; "upload trace" adds a recorded .npz and runs it (lab/uploads.py:
    kept in a temporary directory of the dashboard's, a bad file refused in one line).
    """
    return Dashboard(scenario or Scenario(), image, max_guests, mixes, cache,
                     curve_guests, defer, reach).widget


# ── the memory map ──────────────────────────────────────────────────────────────────────

class MemoryMap:
    """The controller of memory_map: zoom (frames per cell) and position sliders, one figure."""

    def __init__(self, host: Host, cells: int, columns: int) -> None:
        self.host = host
        self.cells = cells
        self.columns = columns
        self.index = views.FrameIndex(host)
        frames = max(1, host.memory.frames)
        zooms = [1]
        while zooms[-1] * cells < frames:
            zooms.append(zooms[-1] * 2)
        self.zoom = W.SelectionSlider(options=[(f"{z} frame{'s' if z > 1 else ''}/cell", z)
                                               for z in zooms], value=zooms[-1],
                                      description="zoom", continuous_update=False)
        self.position = W.IntSlider(value=0, min=0, max=max(0, frames - 1),
                                    step=columns * zooms[-1], description="first frame",
                                    continuous_update=False)
        self.figure = _figure(self.spec())
        lock = threading.RLock()
        self.zoom.observe(_serially(lock, self._zoomed), names="value")
        self.position.observe(_serially(lock, lambda _: self.update()), names="value")
        self.widget = _box([W.HBox([self.zoom, self.position]), self.figure], self)

    def spec(self) -> dict[str, Any]:
        return views.memory_map_data(self.host, self.position.value, self.zoom.value,
                                     self.cells, self.columns, index=self.index)

    def _zoomed(self, change: object) -> None:
        self.position.step = self.columns * self.zoom.value
        self.update()

    def update(self) -> None:
        update_figure(self.figure, self.spec())


def memory_map(host: Host, cells: int = 2048, columns: int = 64) -> Any:
    """A heat strip of `host`'s frames: kind and refcount above, owner below, hover text.

    At most `cells` cells are drawn: zoom out to aggregate frames into cells (hosts of
    ~100k frames fit at 64 frames a cell), zoom in and move to see single frames.
    """
    return MemoryMap(host, cells, columns).widget


# ── the page-walk explorer ──────────────────────────────────────────────────────────────

class _Column:
    """One side of the explorer: a host (or a lone guest), its table figure and explain text."""

    def __init__(self, source: Host | Guest, title: str) -> None:
        self.host = source if isinstance(source, Host) else None
        self.guests = source.guests if isinstance(source, Host) else [source]
        self.title = W.HTML(f"<b>{html.escape(title)}</b>")
        self.rows: list[dict[str, Any]] = [{"stage": "", "level": "", "entry": "",
                                            "value": "", "why": ""}]
        self.figure = _figure(views.walk_table(self.rows, 0))
        self.text = W.HTML()
        self.widget = W.VBox([self.title, self.figure, self.text],
                             layout=W.Layout(width="50%"))

    def walk(self, gi: int, pid: int, va: int) -> None:
        guest = self.guests[gi] if gi < len(self.guests) else None
        mm = guest.procs.get(pid) if guest is not None else None
        if guest is None or mm is None:
            self.rows = [{"stage": "-", "level": "", "entry": "", "value": "",
                          "why": f"no guest {gi} / process {pid} here"}]
            self.explain = [self.rows[0]["why"]]
            return
        data = views.walk_data(guest, mm, va, self.host)
        self.rows, self.explain = data["rows"], data["explain"]

    def show(self, step: int) -> None:
        current = min(step, len(self.rows) - 1)
        update_figure(self.figure, views.walk_table(self.rows, current))
        lines = [html.escape(x) for x in self.explain]
        self.text.value = ("<pre style='font-size:11px; line-height:1.2'>"
                           + "\n".join(lines) + "</pre>")


class PageWalkExplorer:
    """The controller of page_walk_explorer: guest, process, page and step controls."""

    def __init__(self, sources: Sequence[Host | Guest], titles: Sequence[str]) -> None:
        self.columns = [_Column(s, t) for s, t in zip(sources, titles, strict=True)]
        first = self.columns[0]
        self.guest = W.Dropdown(options=[(f"guest {g.gid}", i)
                                         for i, g in enumerate(first.guests)], value=0,
                                description="guest")
        self.process = W.Dropdown(description="process")
        self.page = W.Dropdown(description="page", layout=W.Layout(width="60%"))
        self.address = W.Text(description="or VA", placeholder="0x400000",
                              continuous_update=False)
        self.step = W.IntSlider(value=0, min=0, max=1, description="step")
        self.next = W.Button(description="next ▶")
        self.back = W.Button(description="◀ back")
        self.va = 0
        self._quiet = False
        self._fill_processes()
        # One handler at a time (_serially): `_quiet` is the state of the one running.
        lock = threading.RLock()
        self.guest.observe(_serially(lock, lambda _: self._fill_processes()), names="value")
        self.process.observe(_serially(lock, self._on_process), names="value")
        self.page.observe(_serially(lock, self._on_page), names="value")
        self.address.observe(_serially(lock, lambda _: self._typed()), names="value")
        self.step.observe(_serially(lock, self._on_step), names="value")
        self.next.on_click(_serially(lock, lambda _: self._move(1)))
        self.back.on_click(_serially(lock, lambda _: self._move(-1)))
        self.widget = _box([W.HBox([self.guest, self.process]), W.HBox([self.page,
                                                                        self.address]),
                            W.HBox([self.back, self.step, self.next]),
                            W.HBox([c.widget for c in self.columns])], self)

    # While _quiet, the controller itself is changing options: observers wait for it.
    def _on_process(self, change: object) -> None:
        if not self._quiet:
            self._fill_pages()

    def _on_page(self, change: object) -> None:
        if not self._quiet:
            self._pick(self.page.value)

    def _on_step(self, change: object) -> None:
        if not self._quiet:
            self.show()

    def _fill_processes(self) -> None:
        guest = self.columns[0].guests[self.guest.value]
        options = [(f"pid {pid} {mm.name}", pid) for pid, mm in sorted(guest.procs.items())]
        self._quiet = True  # setting options fires the observers with half-updated state
        self.process.options = options or [("no process", 0)]
        self.process.value = self.process.options[0][1]
        self._quiet = False
        self._fill_pages()

    def _fill_pages(self) -> None:
        pages: dict[int, str] = {}
        for c in self.columns:
            gi = self.guest.value
            guest = c.guests[gi] if gi < len(c.guests) else None
            mm = guest.procs.get(self.process.value) if guest else None
            if guest is not None and mm is not None:
                for label, va in views.mapped_pages(guest, mm):
                    pages.setdefault(va, label)
        options = [(label, va) for va, label in sorted(pages.items())]
        self._quiet = True
        self.page.options = options or [("no mapped page", 0)]
        self.page.value = self.page.options[0][1]
        self._quiet = False
        self._pick(self.page.value)

    def _typed(self) -> None:
        try:
            self._pick(int(self.address.value, 0))
        except ValueError:
            self.address.value = ""

    def _pick(self, va: int) -> None:
        """Walk `va` in every column, restart the steps."""
        self.va = va
        for c in self.columns:
            c.walk(self.guest.value, self.process.value, va)
        steps = max(len(c.rows) for c in self.columns) - 1
        self._quiet = True
        self.step.max = max(steps, 1)
        self.step.value = 0
        self._quiet = False
        self.show()

    def _move(self, delta: int) -> None:
        self.step.value = min(self.step.max, max(0, self.step.value + delta))

    def show(self) -> None:
        for c in self.columns:
            c.show(self.step.value)


def page_walk_explorer(*sources: Host | Guest, pair: bool = True) -> Any:
    """Step through the translation of a guest-virtual address, one column per source.

    Given one Host in some mode and `pair`, the same scenario is also run in the other of
    page-cache and XIP mode, so both are shown side by side (page cache on the left).
    """
    if not sources:
        raise ValueError("page_walk_explorer: give at least one Host or Guest")
    hosts = list(sources)
    if pair and len(hosts) == 1 and isinstance(hosts[0], Host):
        h = hosts[0]
        other = "pagecache" if h.mode == "xip" else "xip"
        twin = Host(h.scenario, other, h.image)
        twin.run()
        hosts = [twin, h] if other == "pagecache" else [h, twin]
    titles = [f"{s.mode} mode" if isinstance(s, Host) else f"guest {s.gid}" for s in hosts]
    return PageWalkExplorer(hosts, titles).widget


# ── the ext2 explorer ───────────────────────────────────────────────────────────────────

class Ext2Explorer:
    """The controller of ext2_explorer: a file dropdown, the block figure, the field tables."""

    def __init__(self, image: Ext2Image) -> None:
        self.image = image
        files = views.regular_files(image)
        self.file = W.Dropdown(options=files, value=files[0] if files else None,
                               description="file", layout=W.Layout(width="60%"))
        self.superblock = W.HTML()
        self.inode = W.HTML()
        self.pages = W.HTML()
        data = views.ext2_file_data(image, self.file.value)
        self.superblock.value = _html_table(data["superblock"], "superblock")
        self.figure = _figure(data["blocks"])
        self._show(data)
        self.file.observe(lambda _: self.update(), names="value")
        self.widget = _box([self.file, W.HBox([self.superblock, self.inode, self.pages]),
                            self.figure], self)

    def update(self) -> None:
        data = views.ext2_file_data(self.image, self.file.value)
        update_figure(self.figure, data["blocks"])
        self._show(data)

    def _show(self, data: Mapping[str, Any]) -> None:
        self.inode.value = (_html_table(data["group"], "group descriptor")
                            + _html_table(data["inode"], "inode"))
        direct = 12
        lines = [f"page {p} → block {b}" + (" (hole)" if not b else
                                            "" if p >= direct else f" (i_block[{p}])")
                 for p, b in data["pages"][:40]]
        if len(data["pages"]) > 40:
            lines.append(f"… {len(data['pages']) - 40} more pages")
        lines += [f"{kind} block {block} (maps from page {logical})"
                  for kind, logical, block in data["metadata"]]
        self.pages.value = ("<b>file pages → image blocks</b><pre style='font-size:11px'>"
                            + html.escape("\n".join(lines)) + "</pre>")


def ext2_explorer(image: Ext2Image | None = None) -> Any:
    """superblock → group → inode → direct/indirect blocks → image blocks, for a chosen file.

    In XIP mode image block b is the shared segment's page b: the figure is also a map of
    which segment pages a file's pages are.
    """
    return Ext2Explorer(image if image is not None else default_image()).widget


# ── the timeline ────────────────────────────────────────────────────────────────────────

class Timeline:
    """The controller of timeline: a mode dropdown over results, three figures."""

    def __init__(self, results: Mapping[str, RunResult]) -> None:
        self.results = dict(results)
        self.mode = W.Dropdown(options=list(self.results), description="mode")
        specs = views.timeline_data(self.results[self.mode.value])
        self.figures = {k: _figure(v) for k, v in specs.items()}
        self.mode.observe(lambda _: self.update(), names="value")
        self.widget = _box([self.mode, self.figures["memory"],
                            W.HBox([self.figures["ksm"], self.figures["faults"]])], self)

    def update(self) -> None:
        for k, spec in views.timeline_data(self.results[self.mode.value]).items():
            update_figure(self.figures[k], spec)


def timeline(result: RunResult | Comparison | Sequence[RunResult]) -> Any:
    """Memory per category over time, KSM catching up and faults per guest, for each result."""
    if isinstance(result, RunResult):
        results = {result.mode: result}
    elif isinstance(result, Comparison):
        results = dict(result.results)
    else:
        results = {r.mode: r for r in result}
    if not results:
        raise ValueError("timeline: no result given")
    return Timeline(results).widget
