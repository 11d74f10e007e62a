// A line chart in SVG (no library): one line per version set, over the last 15 minutes.
const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1a56db", "#c5221f", "#137333", "#b06000", "#7b1fa2", "#00838f", "#5d4037", "#546e7a"];
const W = 600, H = 170, LEFT = 44, BOTTOM = 18, TOP = 8;

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function colour(i) { return PALETTE[i % PALETTE.length]; }

// times: epoch seconds; series: [{label, values: [number|null]}]; format: a tick's text;
// floor: the least top of the scale (so a flat zero still reads as zero).
export function lineChart(times, series, windowS, format, floor = 1e-9) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const end = times.length ? times[times.length - 1] : Date.now() / 1000;
  const start = end - windowS;
  const max = Math.max(floor, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const x = (t) => LEFT + ((t - start) / windowS) * (W - LEFT - 4);
  const y = (v) => TOP + (1 - v / max) * (H - TOP - BOTTOM);
  root.append(svg("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W, y2: H - BOTTOM }));
  for (const v of [0, max / 2, max]) {
    root.append(svg("text", { x: LEFT - 4, y: y(v) + 3, "text-anchor": "end" }, format(v)));
    root.append(svg("line", { class: "axis", x1: LEFT, y1: y(v), x2: W, y2: y(v), "stroke-dasharray": "2 3" }));
  }
  for (const minutes of [15, 10, 5, 0]) {
    const anchor = minutes === 15 ? "start" : minutes ? "middle" : "end";
    root.append(svg("text", { x: x(end - minutes * 60), y: H - 4, "text-anchor": anchor }, minutes ? `-${minutes} min` : "now"));
  }
  series.forEach((s, i) => {
    let d = "";
    let pen = "M";
    s.values.forEach((v, j) => {
      if (v === null) { pen = "M"; return; }
      d += `${pen}${x(times[j]).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    });
    if (d) root.append(svg("path", { d, fill: "none", stroke: colour(i), "stroke-width": 1.8 }));
    const last = s.values.length - 1;  // the latest sample as a dot: visible even as the only one
    if (last >= 0 && s.values[last] !== null) {
      root.append(svg("circle", { cx: x(times[last]).toFixed(1), cy: y(s.values[last]).toFixed(1), r: 3, fill: colour(i) }));
    }
  });
  return root;
}
