// Inline SVG icons for the narration and messages: no emoji, so no font dependency
// (Debian's Chromium has no emoji font and drew empty boxes). 16x16, currentColor.

const NS = "http://www.w3.org/2000/svg";

// name -> [[element, attributes], ...]; strokes unless the part says fill
const SHAPES = {
  placed: [
    ["path", { d: "M2 14h12" }],
    ["path", { d: "M4 12V8M8 12V3M12 12V6" }],
  ],
  filled: [["path", { d: "M3 8.5l3.2 3.2L13 4.8" }]],
  closed: [
    ["path", { d: "M3.5 14.5V2" }],
    ["path", { d: "M3.5 2.5h9l-2 3 2 3h-9", fill: "currentColor", "fill-opacity": "0.35" }],
  ],
  cancelled: [["path", { d: "M4 4l8 8M12 4l-8 8" }]],
  expired: [
    ["path", { d: "M4 2h8M4 14h8" }],
    ["path", { d: "M5 2c0 3 6 3 6 6s-6 3-6 6M11 2c0 3-6 3-6 6s6 3 6 6" }],
  ],
  rejected: [
    ["circle", { cx: "8", cy: "8", r: "6" }],
    ["path", { d: "M4.5 11.5l7-7" }],
  ],
  starting: [["path", { d: "M6 4.5l4 3.5-4 3.5z", fill: "currentColor" }]],
  started: [["path", { d: "M5 3l8 5-8 5z", fill: "currentColor" }]],
  stopped: [["rect", { x: "4", y: "4", width: "8", height: "8", fill: "currentColor" }]],
  exited: [
    ["path", { d: "M3 10l5-6 5 6z", fill: "currentColor" }],
    ["path", { d: "M3 13h10" }],
  ],
  crashed: [["path", { d: "M8 1.5l1.5 4 4-1.5-2 3.8 3 2.2-4 .5.5 4-3-2.8-3 2.8.5-4-4-.5 3-2.2-2-3.8 4 1.5z" }]],
  restarting: [
    ["path", { d: "M13 8a5 5 0 1 1-1.5-3.6" }],
    ["path", { d: "M12 1.5v3.3H8.7" }],
  ],
  warning: [
    ["path", { d: "M8 2L14.5 13.5h-13z" }],
    ["path", { d: "M8 6.5v3.2M8 11.6v.1" }],
  ],
  silent: [
    ["path", { d: "M2.5 6h2.5l3.5-3v10l-3.5-3H2.5z", fill: "currentColor", "fill-opacity": "0.35" }],
    ["path", { d: "M11 6l3 4M14 6l-3 4" }],
  ],
  heartbeat: [["path", { d: "M1.5 8.5h3l1.5-4 2.5 8 2-6 1 2h3" }]],
  dot: [["circle", { cx: "8", cy: "8", r: "2.2", fill: "currentColor" }]],
};

// lifecycle event -> icon (stopping shows the stop square, abandoned/escalated warn)
const ALIASES = { stopping: "stopped", abandoned: "warning", escalated: "warning" };

export const ICON_NAMES = Object.keys(SHAPES);

/** An inline <svg> for `name` (an unknown name gets the dot), aria-hidden. */
export function icon(name, { label = null } = {}) {
  const parts = SHAPES[ALIASES[name] || name] || SHAPES.dot;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "1.6");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  svg.setAttribute("class", "icon");
  svg.dataset.icon = name;
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  for (const [tag, attrs] of parts) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    svg.append(el);
  }
  return svg;
}
