// DOM helpers. Everything from the store or a client becomes a text node or an attribute
// value: no HTML is ever parsed from data (the page's Content-Security-Policy backs this).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  fill(el, children);
  return el;
}

export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}

export function table(columns, rows, attrs = {}) {
  return h("table", { class: "stack", ...attrs },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows));
}

export function cells(columns, values) {
  return values.map((v, i) => h("td", { "data-label": columns[i] }, v));
}

export function stateBadge(state) {
  return h("span", { class: `state state-${state.replace(/ /g, "-")}` }, state);
}

export function iso(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "-";
}

export function ago(ts, now = Date.now() / 1000) {
  const s = Math.max(0, now - ts);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
