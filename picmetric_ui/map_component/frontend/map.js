/* PicMetric's History map: every photo a point on a 2-D canvas, with lasso, box and click selection, hover,
 * zoom and pan. It speaks Streamlit's component protocol (v1) directly: no build step, nothing fetched from
 * outside the server. The points and their colours come as binary files named in the render event's args
 * (see packing.py), each fetched once; a selection goes back as indices into the points file.
 *
 * A point's thumbnail: once the pointer has rested on a point for HOVER_MS (or a finger tapped it), the value
 * asks for it (``hover``: its index; every value also carries the selection). The page serves the photo's
 * thumbnail and names it in the ``thumb`` arg, which the tooltip shows if it is still that point's; the name is
 * remembered, so the point's tooltip shows it at once the next time.
 */
(() => {
  "use strict";

  const OUTSIDE = 0xffff; // a point the History filters exclude (map_chart.OUTSIDE)
  const NONE = 0xffff; // no label (packing.NONE)
  const MARK = "#f59e0b"; // the ring round the opened photo
  const TAU = Math.PI * 2;
  const CLICK_PX = 4; // a press that moves less than this is a click
  const HOVER_MS = 120; // the pointer resting this long on a point asks for its thumbnail
  const ASK_AGAIN_MS = 3000; // a thumbnail asked for and not come by then (a rerun cut short) is asked again
  const TYPES = { f4: Float32Array, i4: Int32Array, u4: Uint32Array, u2: Uint16Array, u1: Uint8Array };
  const MAGIC = "PMMAP1";
  const DATE = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });

  // ---- Streamlit's component protocol ----
  const send = (type, fields) => window.parent.postMessage({ isStreamlitMessage: true, type, ...fields }, "*");

  const $ = (id) => document.getElementById(id);
  const el = {
    map: $("map"), points: $("points"), overlay: $("overlay"), status: $("status"),
    tools: $("tools"), tip: $("tip"), legend: $("legend"),
  };
  const ctx = el.points.getContext("2d");
  const octx = el.overlay.getContext("2d");

  const state = {
    args: {}, dark: false,
    pointsFile: null, groupsFile: null, pts: null, groups: null, buckets: null, legend: [],
    hidden: new Set(), // legend entries hidden by a click on them (-1: the points outside the filters)
    selected: null, selectedCount: 0, shape: null, round: null,
    view: { k: 1, tx: 0, ty: 0 }, mode: "lasso",
    W: 0, H: 0, dpr: 1, hover: -1, drag: null, pinch: null,
    drawnLook: null, lastDrawMs: 0, paintedPoints: 0, paintedAt: 0, sentHeight: 0,
    sentIndices: [], sent: 0, // the selection as last sent (every value carries it), and how many values were sent
    thumbs: new Map(), // point index -> its thumbnail's served name, or null (none), for the current points file
    tipIndex: -1, tipAt: null, thumbTimer: 0, asked: -1, askedAt: 0,
    hoverSince: 0, thumbShown: null, // for the tests: when the tip's point was reached; {index, at, since} on load
  };

  // ---- data files ----
  const files = new Map(); // name -> Promise of the decoded file (the last few, for switching back)

  function load(name) {
    if (!files.has(name)) {
      // Stored gzipped (served.py): inflated here, natively, as it arrives.
      files.set(name, fetch(name).then((response) => {
        if (!response.ok) throw new Error(`${response.status} for ${name}`);
        return new Response(response.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
      }).then(decode).catch((error) => {
        files.delete(name); // asked again on the next render
        throw error;
      }));
      while (files.size > 8) files.delete(files.keys().next().value);
    }
    return files.get(name);
  }

  function decode(buffer) {
    const head = new Uint8Array(buffer, 0, 12);
    if (String.fromCharCode(...head.subarray(0, MAGIC.length)) !== MAGIC) throw new Error("not a map file");
    const headerLength = new DataView(buffer).getUint32(8, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 12, headerLength)));
    const start = Math.ceil((12 + headerLength) / 8) * 8;
    const cols = {};
    for (const c of header.columns) cols[c.name] = new TYPES[c.dtype](buffer, start + c.offset, c.length);
    return { meta: header.meta, cols, count: header.meta.count };
  }

  function withBounds(pts) {
    const { x, y } = pts.cols;
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < pts.count; i++) {
      if (x[i] < minX) minX = x[i];
      if (x[i] > maxX) maxX = x[i];
      if (y[i] < minY) minY = y[i];
      if (y[i] > maxY) maxY = y[i];
    }
    if (!pts.count) minX = maxX = minY = maxY = 0;
    pts.bounds = {
      minX, minY, cx: (minX + maxX) / 2, cy: (minY + maxY) / 2,
      w: Math.max(maxX - minX, 1e-6), h: Math.max(maxY - minY, 1e-6),
    };
    return pts;
  }

  const nameOf = (i) => {
    const pts = state.pts;
    if (!pts.names) pts.names = new TextDecoder().decode(pts.cols.names).split("\0");
    return pts.names[i];
  };

  // Draw order: the points outside the filters first (underneath), then each legend entry in turn.
  function bucketsOf(groups, entries) {
    const n = groups.length, counts = new Int32Array(entries + 2);
    const bucket = (g) => (g === OUTSIDE || g >= entries ? 0 : g + 1);
    for (let i = 0; i < n; i++) counts[bucket(groups[i]) + 1]++;
    for (let b = 1; b < counts.length; b++) counts[b] += counts[b - 1];
    const order = new Int32Array(n), fill = counts.slice(0, entries + 1);
    for (let i = 0; i < n; i++) order[fill[bucket(groups[i])]++] = i;
    return { order, starts: counts, count: entries + 1 }; // bucket 0: outside; bucket b: legend entry b - 1
  }

  const legendIndex = (i) => {
    const g = state.groups.cols.groups[i];
    return g === OUTSIDE || g >= state.legend.length ? -1 : g;
  };
  const isHidden = (i) => state.hidden.size > 0 && state.hidden.has(legendIndex(i));

  // ---- where things are on the screen ----
  // The whole map fits inside the margins at zoom 1, clear of the toolbar at the top.
  const MARGIN = { side: 16, top: 52, bottom: 16 };
  const centre = () => ({ x: state.W / 2, y: (MARGIN.top + state.H - MARGIN.bottom) / 2 });

  function transform() {
    const b = state.pts.bounds, c = centre();
    const fit = Math.min((state.W - 2 * MARGIN.side) / b.w, (state.H - MARGIN.top - MARGIN.bottom) / b.h);
    const a = Math.max(fit, 1e-9) * state.view.k;
    return { a, bx: c.x + state.view.tx - b.cx * a, by: c.y + state.view.ty + b.cy * a };
  }

  function screenOf(i, t = transform()) {
    return { x: t.a * state.pts.cols.x[i] + t.bx, y: t.by - t.a * state.pts.cols.y[i] };
  }

  const dimColour = () => (state.dark ? "#64748b" : "#cbd5e1"); // the points outside the filters

  const pointPx = () => {
    const base = state.args.marker_px || 3;
    return Math.min(9, Math.max(base, Math.round(base * Math.sqrt(state.view.k))));
  };

  function layout() {
    const W = el.map.clientWidth;
    const H = Math.round(Math.min(state.args.canvas_height || 560, Math.max(260, W * 0.9)));
    const dpr = window.devicePixelRatio || 1;
    if (W === state.W && H === state.H && dpr === state.dpr) return false;
    Object.assign(state, { W, H, dpr });
    el.map.style.height = `${H}px`;
    for (const canvas of [el.points, el.overlay]) {
      canvas.width = Math.round(W * dpr);
      canvas.height = Math.round(H * dpr);
      canvas.style.width = `${W}px`;
      canvas.style.height = `${H}px`;
    }
    return true;
  }

  // ---- drawing ----
  function draw() {
    const started = performance.now();
    const { W, H, dpr, pts } = state;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    if (!pts || !state.buckets) return drawOverlay();
    const { x, y } = pts.cols;
    const { order, starts, count } = state.buckets;
    const { a, bx, by } = transform();
    const size = pointPx(), h = size / 2, round = size >= 5;
    const legend = state.legend;
    const selected = state.selected;
    for (const pass of selected ? [0, 1] : [-1]) {
      for (let b = 0; b < count; b++) {
        const entry = b - 1;
        if (state.hidden.has(entry) || starts[b] === starts[b + 1]) continue;
        const outside = entry < 0;
        ctx.fillStyle = outside ? dimColour() : legend[entry].colour;
        ctx.globalAlpha = pass === 1 ? 1 : pass === 0 ? (outside ? 0.15 : 0.22) : outside ? 0.35 : 0.85;
        if (round) ctx.beginPath();
        for (let j = starts[b], end = starts[b + 1]; j < end; j++) {
          const i = order[j];
          if (pass >= 0 && selected[i] !== pass) continue;
          const px = a * x[i] + bx, py = by - a * y[i];
          if (px < -h || py < -h || px > W + h || py > H + h) continue;
          if (round) {
            ctx.moveTo(px + h, py);
            ctx.arc(px, py, h, 0, TAU);
          } else {
            ctx.fillRect(Math.round(px - h), Math.round(py - h), size, size);
          }
        }
        if (round) ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
    state.lastDrawMs = performance.now() - started;
    drawOverlay();
    const drawn = pts.count;
    requestAnimationFrame(() => requestAnimationFrame(() => {
      state.paintedPoints = drawn;
      state.paintedAt = performance.timeOrigin + performance.now();
    }));
  }

  function drawOverlay() {
    const { W, H, dpr, pts } = state;
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    octx.clearRect(0, 0, W, H);
    if (!pts) return;
    const t = transform();
    const accent = getComputedStyle(document.documentElement).getPropertyValue("--text").trim() || "#0f172a";
    octx.lineWidth = 1.5;
    octx.strokeStyle = accent;
    if (state.shape && state.shape.kind !== "point") {
      octx.setLineDash([5, 4]);
      outline(state.shape, (px, py) => ({ x: t.a * px + t.bx, y: t.by - t.a * py }));
      octx.setLineDash([]);
    }
    const drag = state.drag;
    if (drag && drag.moved && drag.mode !== "pan") outline(shapeOf(drag, null), (px, py) => ({ x: px, y: py }));
    const marked = state.args.marked;
    if (marked >= 0 && marked < pts.count) {
      const p = screenOf(marked, t);
      octx.lineWidth = 4;
      octx.strokeStyle = MARK;
      octx.beginPath();
      octx.arc(p.x, p.y, 11, 0, TAU);
      octx.stroke();
    }
    if (state.hover >= 0) {
      const p = screenOf(state.hover, t);
      octx.lineWidth = 2;
      octx.strokeStyle = accent;
      octx.beginPath();
      octx.arc(p.x, p.y, pointPx() / 2 + 3, 0, TAU);
      octx.stroke();
    }
  }

  function outline(shape, toScreen) {
    octx.beginPath();
    if (shape.kind === "box") {
      const a = toScreen(shape.x0, shape.y0), b = toScreen(shape.x1, shape.y1);
      octx.rect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
    } else {
      shape.path.forEach(([px, py], n) => {
        const p = toScreen(px, py);
        if (n) octx.lineTo(p.x, p.y);
        else octx.moveTo(p.x, p.y);
      });
      octx.closePath();
    }
    octx.stroke();
  }

  let frame = 0;
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
  };
  let overlayFrame = 0;
  const scheduleOverlay = () => {
    if (!overlayFrame) overlayFrame = requestAnimationFrame(() => { overlayFrame = 0; drawOverlay(); });
  };

  // ---- finding points ----
  function grid() {
    const pts = state.pts;
    if (pts.grid) return pts.grid;
    const side = Math.max(1, Math.min(256, Math.round(Math.sqrt(pts.count / 4))));
    const b = pts.bounds, cw = b.w / side, ch = b.h / side, { x, y } = pts.cols;
    const cellOf = (i) => Math.min(side - 1, ((x[i] - b.minX) / cw) | 0) * side + Math.min(side - 1, ((y[i] - b.minY) / ch) | 0);
    const starts = new Int32Array(side * side + 1);
    for (let i = 0; i < pts.count; i++) starts[cellOf(i) + 1]++;
    for (let c = 1; c < starts.length; c++) starts[c] += starts[c - 1];
    const items = new Int32Array(pts.count), fill = starts.slice(0, -1);
    for (let i = 0; i < pts.count; i++) items[fill[cellOf(i)]++] = i;
    pts.grid = { side, cw, ch, starts, items };
    return pts.grid;
  }

  /** The point drawn nearest to (sx, sy) within ``radius`` pixels, or -1. */
  function nearest(sx, sy, radius) {
    if (!state.pts || !state.pts.count) return -1;
    const g = grid(), b = state.pts.bounds, t = transform(), { x, y } = state.pts.cols;
    const dx = (sx - t.bx) / t.a - b.minX, dy = (t.by - sy) / t.a - b.minY, r = radius / t.a;
    const clamp = (v) => Math.max(0, Math.min(g.side - 1, Math.floor(v)));
    let best = -1, bestD = radius * radius;
    for (let cx = clamp((dx - r) / g.cw); cx <= clamp((dx + r) / g.cw); cx++) {
      for (let cy = clamp((dy - r) / g.ch); cy <= clamp((dy + r) / g.ch); cy++) {
        const c = cx * g.side + cy;
        for (let j = g.starts[c]; j < g.starts[c + 1]; j++) {
          const i = g.items[j];
          const ex = t.a * x[i] + t.bx - sx, ey = t.by - t.a * y[i] - sy, d = ex * ex + ey * ey;
          if (d <= bestD && !isHidden(i)) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }

  /** The indices of the shown points inside ``shape`` (in the map's coordinates). */
  function inside(shape) {
    const { x, y } = state.pts.cols, found = [];
    let test;
    if (shape.kind === "box") {
      const x0 = Math.min(shape.x0, shape.x1), x1 = Math.max(shape.x0, shape.x1);
      const y0 = Math.min(shape.y0, shape.y1), y1 = Math.max(shape.y0, shape.y1);
      test = (i) => x[i] >= x0 && x[i] <= x1 && y[i] >= y0 && y[i] <= y1;
    } else if (shape.kind === "lasso") {
      const path = shape.path;
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const [px, py] of path) {
        x0 = Math.min(x0, px); x1 = Math.max(x1, px); y0 = Math.min(y0, py); y1 = Math.max(y1, py);
      }
      test = (i) => {
        const px = x[i], py = y[i];
        if (px < x0 || px > x1 || py < y0 || py > y1) return false;
        let within = false;
        for (let a = 0, b = path.length - 1; a < path.length; b = a++) {
          const [ax, ay] = path[a], [bx, by] = path[b];
          if ((ay > py) !== (by > py) && px < ((bx - ax) * (py - ay)) / (by - ay) + ax) within = !within;
        }
        return within;
      };
    } else {
      test = (i) => x[i] === shape.x && y[i] === shape.y;
    }
    for (let i = 0; i < state.pts.count; i++) if (test(i) && !isHidden(i)) found.push(i);
    return found;
  }

  // ---- selecting ----
  function select(shape, notify = true, hover = -1) {
    const found = inside(shape);
    state.shape = shape;
    state.selected = new Uint8Array(state.pts.count);
    for (const i of found) state.selected[i] = 1;
    state.selectedCount = found.length;
    draw();
    if (notify) sendSelection(found, hover);
  }

  function clearSelection(notify) {
    const had = state.selected !== null;
    Object.assign(state, { selected: null, selectedCount: 0, shape: null });
    if (state.pts) draw();
    if (notify && had) sendSelection([]);
    else if (!notify) state.sentIndices = [];
  }

  function sendSelection(indices, hover = -1) {
    state.sentIndices = indices;
    sendValue(hover);
  }

  /** The value: the selection as last sent, and ``hover``, the point whose thumbnail is wanted (-1: none). */
  function sendValue(hover) {
    if (hover >= 0) Object.assign(state, { asked: hover, askedAt: performance.now() });
    const { pointsFile: points, round, sentIndices: indices } = state;
    const value = { points, round, indices, hover, sent: ++state.sent };
    send("streamlit:setComponentValue", { value, dataType: "json" });
  }

  // ---- a point's thumbnail, asked for once the pointer rests on it ----
  const wantsThumb = (i) =>
    i >= 0 && !state.thumbs.has(i) && !(state.asked === i && performance.now() - state.askedAt < ASK_AGAIN_MS);

  function askThumbSoon(i) {
    clearTimeout(state.thumbTimer);
    if (!wantsThumb(i)) return;
    state.thumbTimer = setTimeout(() => {
      if (state.tipIndex === i && wantsThumb(i)) sendValue(i);
    }, HOVER_MS);
  }

  function takeThumb(thumb) {
    if (!thumb || thumb.points !== state.pointsFile || thumb.index < 0 || thumb.index >= state.pts.count) return;
    state.thumbs.set(thumb.index, thumb.name);
    if (state.asked === thumb.index) state.asked = -1;
    if (state.tipIndex === thumb.index) fillThumb(thumb.index);
  }

  /** The shape a drag drew: in the map's coordinates with a transform ``t``, else in pixels. */
  function shapeOf(drag, t) {
    const toMap = t ? (p) => [(p.x - t.bx) / t.a, (t.by - p.y) / t.a] : (p) => [p.x, p.y];
    if (drag.mode === "box") {
      const [x0, y0] = toMap(drag.start), [x1, y1] = toMap(drag.last);
      return { kind: "box", x0, y0, x1, y1 };
    }
    return { kind: "lasso", path: drag.path.map(toMap) };
  }

  // ---- the pointer: drag to select or pan, wheel or pinch to zoom, hover for what a point is ----
  const local = (event) => {
    const box = el.overlay.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  };
  const pointers = new Map();
  const modeNow = () => (state.args.selectable ? state.mode : "pan");

  function zoomAt(px, py, factor) {
    const v = state.view, k = Math.max(0.5, Math.min(5000, v.k * factor)), f = k / v.k, c = centre();
    v.tx = px - c.x - (px - c.x - v.tx) * f;
    v.ty = py - c.y - (py - c.y - v.ty) * f;
    v.k = k;
    state.hover = -1;
    hideTip();
    schedule();
  }

  function resetView() {
    state.view = { k: 1, tx: 0, ty: 0 };
    schedule();
  }

  el.overlay.addEventListener("pointerdown", (event) => {
    if (!state.pts || event.button > 0) return;
    el.overlay.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, local(event));
    hideTip();
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      state.drag = null;
      state.pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y), mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 } };
      scheduleOverlay();
      return;
    }
    if (pointers.size > 2) return;
    const p = local(event);
    state.drag = { mode: modeNow(), start: p, last: p, path: [p], moved: false, touch: event.pointerType !== "mouse" };
    el.map.classList.add("dragging");
  });

  el.overlay.addEventListener("pointermove", (event) => {
    const p = local(event);
    if (pointers.has(event.pointerId)) pointers.set(event.pointerId, p);
    if (state.pinch && pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const distance = Math.hypot(a.x - b.x, a.y - b.y), mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
      state.view.tx += mid.x - state.pinch.mid.x;
      state.view.ty += mid.y - state.pinch.mid.y;
      zoomAt(mid.x, mid.y, distance / Math.max(state.pinch.distance, 1));
      state.pinch = { distance, mid };
      return;
    }
    const drag = state.drag;
    if (!drag) return hoverAt(p, event.pointerType);
    if (!drag.moved && Math.hypot(p.x - drag.start.x, p.y - drag.start.y) < CLICK_PX) return;
    drag.moved = true;
    if (drag.mode === "pan") {
      state.view.tx += p.x - drag.last.x;
      state.view.ty += p.y - drag.last.y;
      schedule();
    } else {
      const last = drag.path[drag.path.length - 1];
      if (Math.hypot(p.x - last.x, p.y - last.y) >= 2) drag.path.push(p);
      scheduleOverlay();
    }
    drag.last = p;
  });

  function endPointer(event, cancelled) {
    pointers.delete(event.pointerId);
    if (state.pinch) {
      if (pointers.size < 2) state.pinch = null;
      return;
    }
    const drag = state.drag;
    state.drag = null;
    el.map.classList.remove("dragging");
    if (!drag || cancelled) return scheduleOverlay();
    if (!drag.moved) return click(drag.start, drag.touch);
    if (drag.mode === "pan") return;
    drag.last = local(event);
    const shape = shapeOf(drag, transform());
    if (shape.kind === "lasso" && shape.path.length < 3) return scheduleOverlay();
    select(shape);
  }
  el.overlay.addEventListener("pointerup", (event) => endPointer(event, false));
  el.overlay.addEventListener("pointercancel", (event) => endPointer(event, true));

  function click(p, touch) {
    const i = nearest(p.x, p.y, Math.max(pointPx() / 2 + 3, touch ? 14 : 7));
    const tip = i >= 0 && (touch || i === state.hover); // a tap shows what the point is; a click keeps it shown
    if (tip) {
      state.hoverSince = performance.now();
      showTip(i, screenOf(i));
    }
    clearTimeout(state.thumbTimer);
    const hover = tip && wantsThumb(i) ? i : -1; // its thumbnail asked for with the selection
    if (!state.args.selectable) {
      if (hover >= 0) sendValue(hover);
      return;
    }
    if (i >= 0) select({ kind: "point", x: state.pts.cols.x[i], y: state.pts.cols.y[i] }, true, hover);
    else clearSelection(true);
  }

  el.overlay.addEventListener("wheel", (event) => {
    if (!state.pts) return;
    event.preventDefault();
    const p = local(event);
    zoomAt(p.x, p.y, Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015)));
  }, { passive: false });
  el.overlay.addEventListener("dblclick", resetView);
  el.overlay.addEventListener("pointerleave", (event) => {
    // A finger leaves after every tap: the tooltip a tap showed stays until the next touch.
    if (!state.drag && event.pointerType !== "touch") {
      state.hover = -1;
      hideTip();
      scheduleOverlay();
    }
  });

  function hoverAt(p, pointerType) {
    if (pointerType !== "mouse" && pointerType !== "pen") return;
    const i = nearest(p.x, p.y, Math.max(pointPx() / 2 + 3, 7));
    if (i === state.hover) return;
    state.hover = i;
    scheduleOverlay();
    if (i < 0) return hideTip();
    state.hoverSince = performance.now();
    showTip(i, screenOf(i));
    askThumbSoon(i);
  }

  // ---- what a point is ----
  function showTip(i, at) {
    const { cols, meta } = state.pts;
    const labels = meta.labels, per = meta.objects_per_point;
    const label = (n) => (n === NONE ? null : labels[n]);
    const objects = [];
    for (let j = 0; j < per; j++) {
      const found = label(cols.objects[i * per + j]);
      if (found) objects.push(found);
    }
    const lines = [
      `top class: ${label(cols.top[i]) || "—"} · ${objects.join(", ") || "no objects"}`,
      `uniqueness ${cols.uniqueness[i].toFixed(2)}${cols.faces[i] ? " · faces" : ""} · ${DATE.format(new Date(cols.day[i] * 864e5))}`,
    ];
    const entry = legendIndex(i);
    const tip = el.tip;
    tip.replaceChildren();
    state.tipIndex = i;
    state.tipAt = at;
    const withThumb = state.thumbs.get(i) !== null; // room for the thumbnail, shown when it comes (unless none)
    tip.classList.toggle("with-thumb", withThumb);
    if (withThumb) {
      const frame = document.createElement("div");
      frame.className = "thumb";
      tip.append(frame);
    }
    const name = document.createElement("b");
    name.textContent = nameOf(i);
    tip.append(name);
    for (const line of lines) {
      const div = document.createElement("div");
      div.textContent = line;
      tip.append(div);
    }
    const group = document.createElement("div");
    group.className = "group";
    group.append(swatch(entry < 0 ? dimColour() : state.legend[entry].colour));
    group.append(entry < 0 ? "outside the filters" : state.legend[entry].name);
    tip.append(group);
    tip.hidden = false;
    if (withThumb) fillThumb(i);
    placeTip();
  }

  /** Beside its point and inside the map, never over the point where there is room: right of and below it,
   * else right and above, left and below, left and above, straight below or above; else where least is cut. */
  function placeTip() {
    const tip = el.tip, at = state.tipAt, gap = 12, w = tip.offsetWidth, h = tip.offsetHeight;
    const { W, H } = state, edge = 4;
    const middle = Math.min(Math.max(edge, at.x - w / 2), W - w - edge);
    const right = at.x + gap, left = at.x - gap - w, below = at.y + gap, above = at.y - gap - h;
    const places = [[right, below], [right, above], [left, below], [left, above], [middle, below], [middle, above]];
    const cut = ([x, y]) =>
      Math.max(0, edge - x) + Math.max(0, x + w + edge - W) + Math.max(0, edge - y) + Math.max(0, y + h + edge - H);
    const [x, y] = places.find((place) => cut(place) === 0) || places.reduce((a, b) => (cut(b) < cut(a) ? b : a));
    tip.style.left = `${Math.max(0, Math.min(x, W - w))}px`;
    tip.style.top = `${Math.max(0, Math.min(y, H - h))}px`;
  }

  /** The tooltip's thumbnail once its name is known: loaded into the room kept for it, or that room removed. */
  function fillThumb(i) {
    const frame = el.tip.querySelector(".thumb");
    const name = state.thumbs.get(i);
    if (!frame || name === undefined || frame.dataset.name === name) return;
    if (name === null) {
      frame.remove();
      el.tip.classList.remove("with-thumb");
      return placeTip();
    }
    frame.dataset.name = name;
    const img = document.createElement("img");
    img.alt = "";
    img.decoding = "async";
    img.addEventListener("load", () => {
      if (state.tipIndex === i) state.thumbShown = { index: i, at: performance.now(), since: state.hoverSince };
    });
    img.src = name;
    frame.replaceChildren(img);
  }

  const hideTip = () => {
    el.tip.hidden = true;
    state.tipIndex = -1;
    clearTimeout(state.thumbTimer);
  };

  function swatch(colour) {
    const span = document.createElement("span");
    span.className = "swatch";
    span.style.background = colour;
    return span;
  }

  // ---- the legend: click an entry to hide or show its points ----
  function renderLegend() {
    const { legend = [], gradient, outside = 0, marked = -1 } = state.args;
    const items = [];
    if (gradient && legend.length > 12) {
      const scale = document.createElement("span");
      scale.className = "scale static";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.background = `linear-gradient(to right, ${legend[0].colour}, ${legend[legend.length - 1].colour})`;
      const day = (entry) => entry.name.replace(/ \(\d+\)$/, "");
      scale.append(day(legend[0]), bar, `${day(legend[legend.length - 1])} · ${legend.length} days`);
      items.push(scale);
    } else {
      legend.forEach((entry, n) => items.push(toggle(n, entry.colour, entry.name)));
    }
    if (outside > 0) items.push(toggle(-1, dimColour(), `outside the filters (${outside})`));
    if (marked >= 0) {
      const opened = document.createElement("span");
      opened.className = "static";
      const ring = document.createElement("span");
      ring.className = "ring";
      opened.append(ring, "opened");
      items.push(opened);
    }
    el.legend.replaceChildren(...items);
  }

  function toggle(entry, colour, text) {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", String(!state.hidden.has(entry)));
    button.title = "Click to hide or show these points";
    button.append(swatch(colour), text);
    button.addEventListener("click", () => {
      if (state.hidden.has(entry)) state.hidden.delete(entry);
      else state.hidden.add(entry);
      button.setAttribute("aria-pressed", String(!state.hidden.has(entry)));
      schedule();
    });
    return button;
  }

  // ---- the toolbar ----
  el.tools.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.mode) {
      state.mode = button.dataset.mode;
      el.map.dataset.mode = state.mode;
      for (const b of el.tools.querySelectorAll("[data-mode]")) b.setAttribute("aria-pressed", String(b === button));
    } else if (button.id === "zoom-in") zoomAt(centre().x, centre().y, 1.5);
    else if (button.id === "zoom-out") zoomAt(centre().x, centre().y, 1 / 1.5);
    else if (button.id === "reset") resetView();
  });

  function showTools(selectable) {
    for (const b of el.tools.querySelectorAll("[data-mode]")) b.hidden = !selectable;
    el.map.dataset.mode = selectable ? state.mode : "pan";
  }

  // ---- the page's theme and size ----
  function applyTheme(theme) {
    if (!theme) return;
    const root = document.documentElement.style;
    root.setProperty("--bg", theme.backgroundColor);
    root.setProperty("--text", theme.textColor);
    root.setProperty("--panel", theme.secondaryBackgroundColor);
    root.setProperty("--accent", theme.primaryColor);
    root.setProperty("--muted", `color-mix(in srgb, ${theme.textColor} 62%, transparent)`);
    root.setProperty("--line", `color-mix(in srgb, ${theme.textColor} 16%, transparent)`);
    state.dark = theme.base === "dark";
  }

  function reportHeight() {
    const height = Math.ceil(document.body.getBoundingClientRect().height) + 2;
    if (height !== state.sentHeight) {
      state.sentHeight = height;
      send("streamlit:setFrameHeight", { height });
    }
  }

  function setStatus(text) {
    el.status.textContent = text;
    el.status.hidden = !text;
  }

  // ---- a render event: new args, theme or width ----
  let renders = 0;
  async function onRender(data) {
    const seq = ++renders;
    const args = data.args || {};
    applyTheme(data.theme);
    state.args = args;
    showTools(args.selectable);
    const sized = layout();
    if (state.round !== null && args.round !== state.round) clearSelection(false);
    state.round = args.round;
    if (args.points !== state.pointsFile || args.groups !== state.groupsFile) {
      if (!state.pts) setStatus(`Loading ${Number(args.count).toLocaleString("en")} points…`);
      let loaded;
      try {
        loaded = await Promise.all([load(args.points).then(withBoundsOnce), load(args.groups)]);
      } catch (error) {
        setStatus(`The map could not be loaded (${error.message}). Reload the page.`);
        return;
      }
      if (seq !== renders) return; // a newer render event has come meanwhile: it draws
      const [pts, groups] = loaded;
      const newPoints = args.points !== state.pointsFile;
      if (args.groups !== state.groupsFile) state.hidden.clear();
      Object.assign(state, { pts, groups, pointsFile: args.points, groupsFile: args.groups });
      state.legend = args.legend; // the legend the buckets were made for (args may run ahead while loading)
      state.buckets = bucketsOf(groups.cols.groups, args.legend.length);
      if (newPoints) {
        state.view = { k: 1, tx: 0, ty: 0 };
        state.hover = -1;
        state.thumbs.clear();
        state.asked = -1;
        hideTip();
        if (state.shape) select(state.shape); // the same region of the new points, sent back as theirs
      }
      state.drawnLook = null;
    }
    setStatus(state.pts && state.pts.count === 0 ? "No photo is on the map yet." : "");
    if (state.pts) takeThumb(args.thumb);
    const { thumb: _thumb, ...drawnArgs } = args; // a thumbnail for the tooltip changes nothing drawn
    const look = JSON.stringify([drawnArgs, data.theme, state.W, state.H]);
    // the same files, legend, ring, theme and size as last drawn: nothing to redraw
    if (look !== state.drawnLook || sized) {
      state.drawnLook = look;
      renderLegend();
      draw();
    }
    reportHeight();
  }

  const withBoundsOnce = (pts) => (pts.bounds ? pts : withBounds(pts));

  window.addEventListener("message", (event) => {
    if (event.data && event.data.type === "streamlit:render") onRender(event.data);
  });
  window.addEventListener("resize", () => {
    if (layout() && state.pts) draw();
    reportHeight();
  });
  new ResizeObserver(reportHeight).observe(document.body);

  // For the tests and the bench (same origin as the page): the state, and where a point is drawn.
  const redraw = () => {
    draw();
    return state.lastDrawMs;
  };
  window.pmMap = { state, nameOf, screenOf: (i) => screenOf(i), redraw };

  send("streamlit:componentReady", { apiVersion: 1 });
})();
