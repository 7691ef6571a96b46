// A horizontal bar chart in SVG, one bar per evaluation, with stderr whiskers. Our own code.
const SVG = 'http://www.w3.org/2000/svg';

export const PALETTE = ['#1f6fd1', '#d9730d', '#2e8b57', '#a23bb5', '#c0392b', '#0f8b8d', '#7a5c00', '#5b5fc7'];

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

/**
 * bars: [{label, value, stderr, color}]. Returns an <svg> with role="img", a title and a
 * description that reads the values, so the chart is not colour- or sight-only.
 */
export function barChart({ title, bars, format = (v) => String(v) }) {
  const width = 360;
  const labelWidth = 84;
  const valueWidth = 64;
  const barHeight = 20;
  const gap = 10;
  const top = 8;
  const axis = 22;
  const plotWidth = width - labelWidth - valueWidth;
  const height = top + bars.length * (barHeight + gap) + axis;
  const finite = bars.filter((b) => Number.isFinite(b.value));
  const hi = Math.max(0, ...finite.map((b) => b.value + (Number.isFinite(b.stderr) ? b.stderr : 0)));
  const lo = Math.min(0, ...finite.map((b) => b.value - (Number.isFinite(b.stderr) ? b.stderr : 0)));
  const max = niceMax(hi);
  const min = lo < 0 ? -niceMax(-lo) : 0;
  const x = (v) => labelWidth + ((v - min) / (max - min || 1)) * plotWidth;

  const titleId = `chart-${Math.random().toString(36).slice(2)}`;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${titleId}-t ${titleId}-d`, class: 'bar-chart' });
  svg.append(s('title', { id: `${titleId}-t` }, title));
  svg.append(s('desc', { id: `${titleId}-d` }, bars.map((b) => `${b.label}: ${Number.isFinite(b.value) ? format(b.value) : 'no value'}`).join('; ')));

  // Grid lines and axis ticks at quarters of the range.
  const plotBottom = top + bars.length * (barHeight + gap);
  for (let i = 0; i <= 4; i++) {
    const v = min + ((max - min) * i) / 4;
    const gx = x(v);
    svg.append(s('line', { x1: gx, x2: gx, y1: top - 4, y2: plotBottom, class: i === 0 || v === 0 ? 'axis' : 'grid' }));
    svg.append(s('text', { x: gx, y: plotBottom + 14, 'text-anchor': 'middle', class: 'tick' }, format(v)));
  }
  bars.forEach((b, i) => {
    const y = top + i * (barHeight + gap);
    const label = b.label.length > 12 ? `${b.label.slice(0, 11)}…` : b.label;
    svg.append(s('text', { x: labelWidth - 6, y: y + barHeight / 2 + 4, 'text-anchor': 'end', class: 'bar-label' }, label));
    if (!Number.isFinite(b.value)) {
      svg.append(s('text', { x: labelWidth + 4, y: y + barHeight / 2 + 4, class: 'bar-value' }, 'no value'));
      return;
    }
    const x0 = x(Math.min(0, b.value));
    const x1 = x(Math.max(0, b.value));
    svg.append(s('rect', { x: x0, y, width: Math.max(1, x1 - x0), height: barHeight, rx: 2, fill: b.color, class: 'bar' }));
    if (Number.isFinite(b.stderr) && b.stderr > 0) {
      const ya = y + barHeight / 2;
      const e0 = x(b.value - b.stderr);
      const e1 = x(b.value + b.stderr);
      svg.append(s('line', { x1: e0, x2: e1, y1: ya, y2: ya, class: 'whisker' }));
      svg.append(s('line', { x1: e0, x2: e0, y1: ya - 5, y2: ya + 5, class: 'whisker' }));
      svg.append(s('line', { x1: e1, x2: e1, y1: ya - 5, y2: ya + 5, class: 'whisker' }));
    }
    svg.append(s('text', { x: width - valueWidth + 6, y: y + barHeight / 2 + 4, class: 'bar-value' }, format(b.value)));
  });
  return svg;
}
