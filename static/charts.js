// The admin console's charts, drawn with uPlot (static/vendor/uplot): axes with ticks and
// labels, a y range padded around the data so that a constant series is a flat line in the
// middle (auto-scaling would stretch it into a diagonal of rounding noise), and points on
// short series, so that two points do not pass for a trend.
// A figure with `data-chart` (JSON written by the server) is drawn on load; round.js draws its
// curves through `AlignloopCharts.draw` and feeds them new points with `update`.
"use strict";

window.AlignloopCharts = (function () {
  const HEIGHT = 200;
  const POINTS_UP_TO = 24; // series this short show every point
  const PAD = 0.1; // of the data's span, above and below
  const HALF_DAY_S = 43200;

  // [low, high] around the values: padded, and around a constant by a tenth of its size.
  function yRange(low, high, fromZero) {
    if (low === null || high === null) return [0, 1];
    if (fromZero) return [Math.min(0, low), high > 0 ? high * (1 + PAD) : 1];
    const span = high - low || Math.abs(high) || 1;
    return [low - span * PAD, high + span * PAD];
  }

  // One step either side of a lone x, so that a single point sits in the middle; bars get
  // half a day either side, so that the first and last are whole.
  function xRange(low, high, bars) {
    if (bars) return [low - HALF_DAY_S, high + HALF_DAY_S];
    return low === high ? [low - 1, high + 1] : [low, high];
  }

  // Asked again at every redraw, so a live curve loses its points as it grows.
  const fewPoints = (u) => u.data[0].length <= POINTS_UP_TO;

  function options(spec, width) {
    const line = {
      label: spec.yLabel,
      stroke: "#2f5bd3",
      width: 1.5,
      points: { show: spec.bars ? false : fewPoints, size: 6, fill: "#2f5bd3" },
    };
    if (spec.bars) Object.assign(line, { fill: "#2f5bd380", paths: uPlot.paths.bars({ size: [0.7, 40] }) });
    return {
      width,
      height: HEIGHT,
      legend: { show: false },
      cursor: { points: { show: !spec.bars } },
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"), // as pages write times
      scales: {
        x: { time: Boolean(spec.time), range: (u, low, high) => xRange(low, high, Boolean(spec.bars)) },
        y: { range: (u, low, high) => yRange(low, high, Boolean(spec.bars)) },
      },
      axes: [{ label: spec.xLabel }, { label: spec.yLabel, size: 60 }],
      series: [{ label: spec.xLabel }, line],
    };
  }

  // uPlot's x values: time axes take seconds, and the server writes ISO days.
  function xValues(spec) {
    return spec.time ? spec.x.map((day) => Date.parse(day) / 1000) : spec.x;
  }

  // A chart of `spec` ({x, y, xLabel, yLabel, time?, bars?}) filling `target`'s width.
  function draw(target, spec) {
    const plot = new uPlot(options(spec, target.clientWidth || 320), [xValues(spec), spec.y], target);
    new ResizeObserver(() => plot.setSize({ width: target.clientWidth, height: HEIGHT })).observe(target);
    target.chart = plot; // for the browser tests: its scales and data
    return plot;
  }

  // New points for a chart that `draw` made; the ranges are computed again.
  function update(plot, spec) {
    plot.setData([xValues(spec), spec.y]);
  }

  document.querySelectorAll("[data-chart]").forEach((figure) => {
    draw(figure.querySelector(".plot"), JSON.parse(figure.dataset.chart));
  });

  return { draw, update };
})();
