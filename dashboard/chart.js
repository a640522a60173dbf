// A small candle chart on <canvas>: candles from GET /candles, the last one moved by ticks.
// Numbers become floats here only to be drawn; the labels keep the feed's decimals.

import { clock, parseTime } from "./dom.js";

export const GRANULARITY_S = {
  S5: 5,
  S10: 10,
  S30: 30,
  M1: 60,
  M5: 300,
  M15: 900,
  M30: 1800,
  H1: 3600,
  H4: 14400,
  D: 86400,
};

const decimalsOf = (text) => {
  const m = /\.(\d+)$/.exec(String(text ?? ""));
  return m ? m[1].length : 0;
};

export class CandleChart {
  constructor(canvas, { max = 100 } = {}) {
    this.canvas = canvas;
    this.max = max;
    this.candles = [];
    this.series = null; // {venue, symbol, granularity}
    this.decimals = 2;
    this.message = "Select a symbol";
    this.frame = 0;
    this.colors = null;
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  /** Show a new series: candles are {time, o, h, l, c, volume, complete}, oldest first. */
  setSeries(series, candles) {
    this.series = series;
    this.decimals = 2;
    this.candles = [];
    for (const c of candles) {
      const t = parseTime(c.time);
      const row = { t, o: Number(c.o), h: Number(c.h), l: Number(c.l), c: Number(c.c) };
      if (!Number.isFinite(t) || [row.o, row.h, row.l, row.c].some((v) => !Number.isFinite(v))) {
        continue;
      }
      this.decimals = Math.max(this.decimals, decimalsOf(c.c), decimalsOf(c.o));
      this.candles.push(row);
    }
    this.candles = this.candles.slice(-this.max);
    this.message = this.candles.length ? "" : "No candles yet";
    this.publish();
    this.schedule();
  }

  showMessage(series, message) {
    this.series = series;
    this.candles = [];
    this.message = message;
    this.publish();
    this.schedule();
  }

  matches(venue, symbol) {
    return this.series && this.series.venue === venue && this.series.symbol === symbol;
  }

  /** A tick for the shown symbol: extend the last candle or open the next one. */
  tick(p) {
    if (!this.matches(p.venue, p.symbol)) return;
    const bid = p.bid != null ? Number(p.bid) : NaN;
    const ask = p.ask != null ? Number(p.ask) : NaN;
    const mid = Number.isFinite(bid) && Number.isFinite(ask) ? (bid + ask) / 2 : Number.isFinite(bid) ? bid : ask;
    const t = parseTime(p.time);
    if (!Number.isFinite(mid) || !Number.isFinite(t)) return;
    this.decimals = Math.max(this.decimals, decimalsOf(p.bid), decimalsOf(p.ask));
    const span = (GRANULARITY_S[this.series.granularity] || 60) * 1000;
    const bucket = Math.floor(t / span) * span;
    const last = this.candles[this.candles.length - 1];
    if (last && bucket < last.t) return; // older than what we show
    if (last && bucket < last.t + span) {
      last.h = Math.max(last.h, mid);
      last.l = Math.min(last.l, mid);
      last.c = mid;
    } else {
      const open = last ? last.c : mid;
      this.candles.push({ t: bucket, o: open, h: Math.max(open, mid), l: Math.min(open, mid), c: mid });
      if (this.candles.length > this.max) this.candles.shift();
    }
    this.message = "";
    this.publish();
    this.schedule();
  }

  publish() {
    const d = this.canvas.dataset;
    d.candles = String(this.candles.length);
    d.symbol = this.series ? this.series.symbol : "";
    const last = this.candles[this.candles.length - 1];
    d.lastClose = last ? last.c.toFixed(this.decimals) : "";
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  palette() {
    if (!this.colors) {
      const css = getComputedStyle(this.canvas);
      const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
      this.colors = {
        up: v("--up", "#2ecc71"),
        down: v("--down", "#ff5c5c"),
        grid: v("--grid", "#253041"),
        text: v("--text-dim", "#8a97ab"),
        last: v("--accent", "#4da3ff"),
        font: `11px ${v("--mono", "monospace")}`,
      };
    }
    return this.colors;
  }

  draw() {
    this.frame = 0;
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const hgt = canvas.clientHeight;
    if (!w || !hgt) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const col = this.palette();
    ctx.font = col.font;
    ctx.textBaseline = "middle";

    if (!this.candles.length) {
      ctx.fillStyle = col.text;
      ctx.textAlign = "center";
      ctx.fillText(this.message || "", w / 2, hgt / 2);
      return;
    }

    const axisW = 12 + ctx.measureText(this.candles[0].c.toFixed(this.decimals)).width;
    const pad = { top: 10, right: axisW, bottom: 20, left: 6 };
    const plotW = w - pad.left - pad.right;
    const plotH = hgt - pad.top - pad.bottom;
    let lo = Math.min(...this.candles.map((c) => c.l));
    let hi = Math.max(...this.candles.map((c) => c.h));
    if (hi - lo < 1e-12) {
      const bump = Math.abs(hi) * 1e-4 || 1;
      lo -= bump;
      hi += bump;
    }
    const margin = (hi - lo) * 0.06;
    lo -= margin;
    hi += margin;
    const y = (v) => pad.top + ((hi - v) / (hi - lo)) * plotH;

    // grid and price labels
    ctx.strokeStyle = col.grid;
    ctx.fillStyle = col.text;
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    const rows = Math.max(2, Math.min(6, Math.floor(plotH / 45)));
    for (let i = 0; i <= rows; i += 1) {
      const v = lo + ((hi - lo) * i) / rows;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, yy);
      ctx.lineTo(pad.left + plotW, yy);
      ctx.stroke();
      ctx.fillText(v.toFixed(this.decimals), pad.left + plotW + 6, yy);
    }

    // candles
    const slots = Math.max(this.candles.length, 40);
    const slot = plotW / slots;
    const body = Math.max(1, Math.floor(slot * 0.66));
    const x0 = pad.left + plotW - this.candles.length * slot;
    this.candles.forEach((c, i) => {
      const cx = Math.round(x0 + i * slot + slot / 2) + 0.5;
      const up = c.c >= c.o;
      ctx.strokeStyle = ctx.fillStyle = up ? col.up : col.down;
      ctx.beginPath();
      ctx.moveTo(cx, y(c.h));
      ctx.lineTo(cx, y(c.l));
      ctx.stroke();
      const top = y(Math.max(c.o, c.c));
      const bh = Math.max(1, y(Math.min(c.o, c.c)) - top);
      ctx.fillRect(cx - body / 2, top, body, bh);
    });

    // time labels
    ctx.fillStyle = col.text;
    ctx.textAlign = "center";
    const every = Math.max(1, Math.ceil(this.candles.length / Math.max(1, Math.floor(plotW / 90))));
    for (let i = this.candles.length - 1; i >= 0; i -= every) {
      const cx = x0 + i * slot + slot / 2;
      if (cx < pad.left + 20) break;
      if (cx > pad.left + plotW - 18) continue; // keep clear of the price axis
      ctx.fillText(clock(this.candles[i].t).slice(0, 5), cx, hgt - pad.bottom / 2);
    }

    // last price
    const last = this.candles[this.candles.length - 1];
    const ly = Math.round(y(last.c)) + 0.5;
    ctx.strokeStyle = col.last;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(pad.left, ly);
    ctx.lineTo(pad.left + plotW, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = col.last;
    ctx.fillRect(pad.left + plotW + 1, ly - 8, pad.right - 1, 16);
    ctx.fillStyle = "#0b1220";
    ctx.textAlign = "left";
    ctx.fillText(last.c.toFixed(this.decimals), pad.left + plotW + 6, ly);
  }
}
