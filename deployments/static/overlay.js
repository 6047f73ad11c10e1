// SVG overlays for a predict response, in image pixels (the SVG's viewBox is the image size), so
// they scale with the displayed image at any size. Colours follow Ultralytics' defaults.

const SVG_NS = "http://www.w3.org/2000/svg";

// ultralytics/utils/plotting.py, Colors.hexs: the default palette, indexed by class.
export const PALETTE = [
  "#042aff", "#0bdbeb", "#f3f3f3", "#00dfb7", "#111f68", "#ff6fdd", "#ff444f", "#cced00",
  "#00f344", "#bd00ff", "#00b4ff", "#dd00ba", "#00ffff", "#26c000", "#01ffb3", "#7d24ff",
  "#7b0068", "#ff1b6c", "#fc6d2f", "#a2ff0b",
];

// Colors.pose_palette, and Annotator's COCO skeleton (1-based keypoint pairs) and its colours.
const POSE_PALETTE = [
  [255, 128, 0], [255, 153, 51], [255, 178, 102], [230, 230, 0], [255, 153, 255],
  [153, 204, 255], [255, 102, 255], [255, 51, 255], [102, 178, 255], [51, 153, 255],
  [255, 153, 153], [255, 102, 102], [255, 51, 51], [153, 255, 153], [102, 255, 102],
  [51, 255, 51], [0, 255, 0], [0, 0, 255], [255, 0, 0], [255, 255, 255],
].map(([r, g, b]) => `rgb(${r}, ${g}, ${b})`);
const SKELETON = [
  [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
  [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
];
const LIMB_COLOR = [9, 9, 9, 9, 7, 7, 7, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16];
const KPT_COLOR = [16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9];
const KPT_MIN_CONF = 0.25; // Annotator.kpts' default: hide keypoints the model is unsure of

export function classColor(index) {
  const n = PALETTE.length;
  return PALETTE[((index % n) + n) % n];
}

// Dark text on light label backgrounds, as Annotator does with its dark_colors set.
function textColor(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.6 ? "#111827" : "#ffffff";
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(n) {
  return Number(n).toFixed(1);
}

export function isClassify(results) {
  return results.length > 0 && !("box" in results[0]);
}

// A filled tag with text, kept inside the image; anchored above (x, y) when there is room.
function label(parent, text, x, y, color, ctx) {
  const g = el("g", { class: "label" }, parent);
  const rect = el("rect", { fill: color, rx: ctx.fontSize * 0.15 }, g);
  const node = el("text", { class: "label-text", fill: textColor(color), "font-size": ctx.fontSize }, g);
  node.textContent = text;
  const pad = ctx.fontSize * 0.3;
  const measured = node.getComputedTextLength();
  const width = (measured > 0 ? measured : text.length * ctx.fontSize * 0.58) + 2 * pad;
  const height = ctx.fontSize * 1.35;
  let top = y - height >= 0 ? y - height : y;
  top = Math.min(top, ctx.height - height);
  const left = Math.max(0, Math.min(x, ctx.width - width));
  for (const [k, v] of Object.entries({ x: left, y: top, width, height })) rect.setAttribute(k, fmt(v));
  node.setAttribute("x", fmt(left + pad));
  node.setAttribute("y", fmt(top + height / 2));
  return g;
}

function points(pairs) {
  return pairs.map(([x, y]) => `${fmt(x)},${fmt(y)}`).join(" ");
}

function drawKeypoints(g, keypoints, ctx) {
  const coco = keypoints.length === 17;
  const visible = (k) => k && k.conf >= KPT_MIN_CONF && (k.x !== 0 || k.y !== 0);
  if (coco) {
    SKELETON.forEach(([a, b], i) => {
      const p = keypoints[a - 1];
      const q = keypoints[b - 1];
      if (!visible(p) || !visible(q)) return;
      el("line", {
        class: "limb", x1: fmt(p.x), y1: fmt(p.y), x2: fmt(q.x), y2: fmt(q.y),
        stroke: POSE_PALETTE[LIMB_COLOR[i]],
      }, g);
    });
  }
  keypoints.forEach((k, i) => {
    if (!visible(k)) return;
    el("circle", {
      class: "kpt", cx: fmt(k.x), cy: fmt(k.y), r: fmt(ctx.radius),
      fill: coco ? POSE_PALETTE[KPT_COLOR[i]] : ctx.color,
    }, g);
  });
}

function drawDetection(svg, result, index, ctx) {
  const color = classColor(result.class);
  const g = el("g", { class: "det", "data-index": index, "data-class": result.class }, svg);
  const text = `${result.name} ${result.confidence.toFixed(2)}`;
  const c = { ...ctx, color };
  if (Array.isArray(result.segments) && result.segments.length >= 3) {
    el("polygon", { class: "poly", points: points(result.segments), fill: color, stroke: color }, g);
  }
  if (result.obb) {
    const o = result.obb;
    const corners = [[o.x1, o.y1], [o.x2, o.y2], [o.x3, o.y3], [o.x4, o.y4]];
    el("polygon", { class: "obb", points: points(corners), stroke: color }, g);
    const top = corners.reduce((best, p) => (p[1] < best[1] ? p : best));
    label(g, text, top[0], top[1], color, c);
    return;
  }
  const b = result.box;
  el("rect", {
    class: "box", x: fmt(b.x1), y: fmt(b.y1), width: fmt(b.x2 - b.x1), height: fmt(b.y2 - b.y1),
    stroke: color,
  }, g);
  if (Array.isArray(result.keypoints)) drawKeypoints(g, result.keypoints, c);
  label(g, text, b.x1, b.y1, color, c);
}

// Draw one response over an image of its `shape`; returns how many predictions were drawn.
export function drawOverlay(svg, response, { blank = false } = {}) {
  svg.replaceChildren();
  const image = response.images[0];
  const [height, width] = image.shape;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (blank) el("rect", { class: "blank", x: 0, y: 0, width, height }, svg);
  const longest = Math.max(width, height);
  const ctx = {
    width,
    height,
    fontSize: Math.max(10, Math.round(longest * 0.021)),
    radius: Math.max(2, longest * 0.0045),
  };
  const results = image.results;
  if (isClassify(results)) {
    const top = results[0];
    const g = el("g", { class: "cls" }, svg);
    label(g, `${top.name} ${top.confidence.toFixed(2)}`, 0, 0, classColor(top.class), ctx);
    return results.length;
  }
  results.forEach((r, i) => drawDetection(svg, r, i, ctx));
  return results.length;
}

// Classification: horizontal bars for the top-5 classes, in the results panel.
export function drawTop5(svg, results) {
  svg.replaceChildren();
  const rowH = 30;
  const width = 340;
  const labelW = 120;
  const valueW = 52;
  const barW = width - labelW - valueW;
  svg.setAttribute("viewBox", `0 0 ${width} ${rowH * results.length}`);
  results.forEach((r, i) => {
    const y = i * rowH;
    const g = el("g", { class: "bar", "data-index": i }, svg);
    const name = el("text", { x: 0, y: y + rowH / 2 }, g);
    name.textContent = r.name;
    el("rect", { class: "bar-bg", x: labelW, y: y + 7, width: barW, height: rowH - 14, rx: 4 }, g);
    el("rect", {
      class: "bar-fill", x: labelW, y: y + 7, width: fmt(Math.max(1, barW * r.confidence)),
      height: rowH - 14, rx: 4, fill: classColor(r.class),
    }, g);
    const value = el("text", { class: "bar-value", x: width, y: y + rowH / 2, "text-anchor": "end" }, g);
    value.textContent = `${(r.confidence * 100).toFixed(1)}%`;
  });
}
