// A round's admin page: while the round is queued or running, follow its status, stage and
// progress, append new log lines, and redraw the training curves (static/charts.js) from the
// stored metric points (/api/rounds/{id}, /log, /metrics). Every value is inserted as text,
// never as HTML. Its words come from the page (`data-text`), in the admin's language.
"use strict";

(function () {
  const root = document.getElementById("round");
  if (!root) return;
  const id = root.dataset.round;
  const POLL_MS = 2000;
  const HIDDEN = new Set(["step", "seconds"]); // bookkeeping, not training signals
  let lastLog = Number(root.dataset.lastLog);
  const words = JSON.parse(root.dataset.text); // the page's words: {status, stage, eta, range}
  const charts = new Map(); // "stage · metric" → {plot, caption}, redrawn in place as points come

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  // As the server's `time_left` filter writes it.
  function timeLeft(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const eta = (unit, n) => words.eta[unit].replace("{n}", n);
    if (seconds < 90) return eta("seconds", Math.max(5, Math.round(seconds / 5) * 5));
    if (seconds < 90 * 60) return eta("minutes", Math.round(seconds / 60));
    return eta("hours", (seconds / 3600).toFixed(1));
  }

  function format(value) {
    return Math.abs(value) >= 1000 || (value !== 0 && Math.abs(value) < 0.01)
      ? value.toExponential(2) : value.toFixed(3);
  }

  function caption(title, points) {
    const values = points.map((point) => point.value);
    const latest = values[values.length - 1];
    return `${title}: ${format(latest)} (${words.range} ${format(Math.min(...values))} … ${format(Math.max(...values))})`;
  }

  function spec(name, points) {
    const area = document.getElementById("curves");
    return { x: points.map((point) => point.step), y: points.map((point) => point.value),
      xLabel: area.dataset.xLabel, yLabel: name };
  }

  // A figure per series, made once; later polls give its chart the whole series again.
  function drawCurve(key, title, name, points) {
    const shown = charts.get(key);
    if (shown) {
      AlignloopCharts.update(shown.plot, spec(name, points));
      shown.caption.textContent = caption(title, points);
      return;
    }
    const figure = document.createElement("figure");
    figure.className = "curve";
    figure.dataset.name = key;
    const plot = document.createElement("div");
    plot.className = "plot";
    const text = document.createElement("figcaption");
    text.textContent = caption(title, points);
    figure.append(text, plot);
    document.getElementById("curves").appendChild(figure);
    charts.set(key, { plot: AlignloopCharts.draw(plot, spec(name, points)), caption: text });
  }

  function drawCurves(points) {
    if (!points.length) return;
    const series = new Map();
    points.filter((point) => !HIDDEN.has(point.name)).forEach((point) => {
      const key = `${point.stage} · ${point.name}`;
      const title = `${words.stage[point.stage]} · ${point.name}`;
      if (!series.has(key)) series.set(key, { name: point.name, title, points: [] });
      series.get(key).points.push(point);
    });
    document.querySelector("#curves > .muted")?.remove();
    series.forEach(({ name, title, points: line }, key) =>
      drawCurve(key, title, name, line.sort((a, b) => a.step - b.step)));
  }

  function appendLog(lines) {
    const log = document.getElementById("log");
    if (lines.length) log.querySelector(".empty")?.remove();
    lines.forEach((line) => {
      const item = document.createElement("li");
      item.className = `level-${line.level.toLowerCase()}`;
      const time = document.createElement("time");
      time.textContent = new Date(line.created_at).toISOString().slice(11, 19);
      const stage = document.createElement("b");
      stage.textContent = words.stage[line.stage];
      const message = document.createElement("span");
      message.textContent = line.message;
      item.append(time, " ", stage, " ", message);
      log.appendChild(item);
      lastLog = line.id;
    });
  }

  function showState(round) {
    const status = document.getElementById("round-status");
    status.textContent = words.status[round.status];
    status.className = `status-${round.status}`;
    document.getElementById("round-stage").textContent = words.stage[round.stage];
    document.getElementById("round-progress").textContent = Math.round(round.progress * 100);
    document.getElementById("round-bar").value = round.progress;
    document.getElementById("round-detail").textContent = round.progress_detail ? `· ${round.progress_detail}` : "";
    document.getElementById("round-eta").textContent = timeLeft(round.eta_seconds);
    document.querySelectorAll("#pipeline li").forEach((item) => {
      const done = item.dataset.stage in round.timings;
      item.classList.toggle("done", done);
      item.classList.toggle("current", !done && item.dataset.stage === round.stage);
    });
  }

  async function refresh() {
    try {
      const round = await getJSON(`/api/rounds/${id}`);
      showState(round);
      appendLog(await getJSON(`/api/rounds/${id}/log?after=${lastLog}`));
      drawCurves(await getJSON(`/api/rounds/${id}/metrics`));
      if (round.status !== "queued" && round.status !== "running") {
        window.location.reload(); // the finished page shows the results
        return;
      }
    } catch (error) {
      console.warn("round refresh failed", error);
    }
    window.setTimeout(refresh, POLL_MS);
  }

  getJSON(`/api/rounds/${id}/metrics`).then(drawCurves).catch(() => {});
  if (root.dataset.active === "true") window.setTimeout(refresh, POLL_MS);
})();
