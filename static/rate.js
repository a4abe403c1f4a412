// The rater page, enhanced: keyboard shortcuts, ranking by keys, clicks or dragging, the
// "better answer" editor prefilled with the preferred response, times in the rater's own time
// zone, and the next task swapped in without reloading. Without this script the page still
// works as a plain form.
"use strict";

(function () {
  const area = document.getElementById("task-area");
  const help = document.getElementById("help");
  if (!area) return;

  let form = null;          // the current task's judgement form
  let ranking = [];         // for 3-4 responses: groups of labels, best first, ties share a group
  let tieNext = false;      // "=" was pressed: the next pick joins the previous group
  let shownAt = 0;          // when the task became visible (ms), for time spent
  let spentMs = 0;

  const EMPTY_POLL_MS = 10000;

  // --- set-up for each task fragment ------------------------------------------------------

  function init() {
    form = document.getElementById("judgement");
    ranking = [];
    tieNext = false;
    spentMs = 0;
    shownAt = document.hidden ? 0 : Date.now();
    showLocalTimes();
    if (!form) { window.setTimeout(pollWhileEmpty, EMPTY_POLL_MS); return; }
    form.addEventListener("submit", onSubmit);
    const skipForm = document.getElementById("skip-form");
    if (skipForm) skipForm.addEventListener("submit", onSkip);
    if (!isPairwise()) initRanking();
    const rewriteBox = document.getElementById("rewrite-box");
    if (rewriteBox) rewriteBox.addEventListener("toggle", () => rewriteBox.open && prefillRewrite());
    area.querySelectorAll("[data-action=help]").forEach((b) => b.addEventListener("click", toggleHelp));
  }

  // With nothing to rate, ask again now and then: candidate generation adds tasks as it goes.
  async function pollWhileEmpty() {
    if (!area.querySelector(".empty")) return;
    if (!document.hidden) {
      try {
        const response = await fetch("/rate", {
          headers: { "X-Requested-With": "fetch" },
          credentials: "same-origin",
        });
        const fragment = document.createElement("template");
        fragment.innerHTML = response.ok ? await response.text() : "";
        if (response.ok && !fragment.content.querySelector(".empty")) {
          area.replaceChildren(fragment.content);
          init();
          return;
        }
      } catch (error) {
        // Offline or the server is restarting: ask again later.
      }
    }
    window.setTimeout(pollWhileEmpty, EMPTY_POLL_MS);
  }

  // The server writes times in UTC (right without this script); show them in local time.
  function showLocalTimes() {
    const clock = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    area.querySelectorAll("time[data-local=clock]").forEach((element) => {
      const moment = new Date(element.dateTime);
      if (Number.isNaN(moment.getTime())) return;
      element.title = element.textContent;
      element.textContent = moment.toLocaleTimeString(document.documentElement.lang, clock);
    });
  }

  function isPairwise() {
    return form.dataset.pairwise === "true";
  }

  function labels() {
    return Array.from(form.querySelectorAll("article.response")).map((card) => card.dataset.label);
  }

  function card(label) {
    return form.querySelector(`article.response[data-label="${label}"]`);
  }

  // --- time spent -------------------------------------------------------------------------

  document.addEventListener("visibilitychange", () => {
    if (document.hidden && shownAt) { spentMs += Date.now() - shownAt; shownAt = 0; }
    else if (!document.hidden) shownAt = Date.now();
  });

  function timeSpent() {
    return spentMs + (shownAt ? Date.now() - shownAt : 0);
  }

  // --- choosing between two responses -----------------------------------------------------

  function choose(value) {
    const input = form.querySelector(`input[name=preference][value="${value}"]`);
    if (input) { input.checked = true; input.focus(); }
  }

  function preferredLabel() {
    if (isPairwise()) {
      const checked = form.querySelector("input[name=preference]:checked");
      if (checked && checked.value.startsWith("better:")) {
        const id = checked.value.slice("better:".length);
        return form.querySelector(`article.response[data-response-id="${id}"]`).dataset.label;
      }
      return labels()[0];
    }
    return ranking.length ? ranking[0][0] : labels()[0];
  }

  // --- ranking three or four responses ----------------------------------------------------

  function initRanking() {
    // Start from the selects (filled in when the server re-shows the form after an error).
    form.querySelectorAll("select[name^=rank_]").forEach((select) => {
      select.addEventListener("change", rankingFromSelects);
    });
    rankingFromSelects();
  }

  function rankingFromSelects() {
    const byRank = new Map();
    form.querySelectorAll("select[name^=rank_]").forEach((select) => {
      if (!select.value) return;
      const rank = Number(select.value);
      if (!byRank.has(rank)) byRank.set(rank, []);
      byRank.get(rank).push(select.dataset.label);
    });
    ranking = Array.from(byRank.keys()).sort((a, b) => a - b).map((rank) => byRank.get(rank).sort());
    renderRanking(false);
  }

  function pick(label) {
    if (ranking.some((group) => group.includes(label))) return;
    if (tieNext && ranking.length) ranking[ranking.length - 1].push(label);
    else ranking.push([label]);
    tieNext = false;
    renderRanking(true);
  }

  function undoPick() {
    const last = ranking[ranking.length - 1];
    if (!last) return;
    last.pop();
    if (!last.length) ranking.pop();
    renderRanking(true);
  }

  function clearRanking() {
    ranking = [];
    tieNext = false;
    renderRanking(true);
  }

  function renderRanking(updateSelects) {
    if (updateSelects) {
      form.querySelectorAll("select[name^=rank_]").forEach((select) => {
        const index = ranking.findIndex((group) => group.includes(select.dataset.label));
        select.value = index >= 0 ? String(index + 1) : "";
      });
    }
    const strip = document.getElementById("ranking-strip");
    if (!strip) return;
    strip.textContent = "";
    const ranked = ranking.flat();
    ranking.forEach((group, index) => {
      group.forEach((label, position) => strip.appendChild(chip(label, index + 1, position > 0)));
    });
    labels().filter((label) => !ranked.includes(label)).forEach((label) => {
      strip.appendChild(chip(label, null, false));
    });
  }

  function chip(label, rank, tied) {
    const item = document.createElement("li");
    item.className = "chip" + (rank ? "" : " unranked") + (tied ? " tied" : "");
    item.draggable = true;
    item.dataset.label = label;
    item.textContent = rank ? `${tied ? "= " : ""}${rank}. ${label}` : `${label} (${form.dataset.labelUnranked})`;
    item.addEventListener("click", () => pick(label));
    item.addEventListener("dragstart", (event) => event.dataTransfer.setData("text/plain", label));
    item.addEventListener("dragover", (event) => event.preventDefault());
    item.addEventListener("drop", (event) => {
      event.preventDefault();
      moveBefore(event.dataTransfer.getData("text/plain"), label);
    });
    return item;
  }

  function moveBefore(dragged, target) {
    // Dragging gives a strict order of every response as the strip now shows it.
    const order = Array.from(document.querySelectorAll("#ranking-strip .chip")).map((c) => c.dataset.label);
    const without = order.filter((label) => label !== dragged);
    without.splice(without.indexOf(target), 0, dragged);
    ranking = without.map((label) => [label]);
    renderRanking(true);
  }

  // --- the better-answer editor -----------------------------------------------------------

  function prefillRewrite() {
    const editor = document.getElementById("rewrite");
    if (!editor || editor.value.trim()) return;
    const source = card(preferredLabel());
    editor.value = source.querySelector(".raw-text").value;
    form.elements.rewrite_of.value = source.dataset.responseId;  // what the rewrite replaces
  }

  function openRewrite() {
    const box = document.getElementById("rewrite-box");
    box.open = true;
    prefillRewrite();
    document.getElementById("rewrite").focus();
  }

  // --- submitting -------------------------------------------------------------------------

  function problem() {
    if (isPairwise()) return form.querySelector("input[name=preference]:checked") ? null : form.dataset.msgChoose;
    return ranking.flat().length === labels().length ? null : form.dataset.msgRank;
  }

  function showProblem(message) {
    let banner = area.querySelector(".error");
    if (!banner) {
      banner = document.createElement("p");
      banner.className = "error";
      banner.setAttribute("role", "alert");
      area.prepend(banner);
    }
    banner.textContent = message;
    banner.scrollIntoView({ block: "center" });
  }

  function onSubmit(event) {
    event.preventDefault();
    const message = problem();
    if (message) { showProblem(message); return; }
    form.elements.time_spent_ms.value = String(Math.round(timeSpent()));
    send(form);
  }

  function onSkip(event) {
    event.preventDefault();
    send(event.target);
  }

  async function send(target) {
    const buttons = target.querySelectorAll("button[type=submit]");
    buttons.forEach((button) => { button.disabled = true; });
    try {
      const response = await fetch(target.action, {
        method: "POST",
        body: new FormData(target),
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin",
      });
      if (response.redirected && response.url.includes("/login")) { window.location = response.url; return; }
      area.innerHTML = await response.text();
      init();
      window.scrollTo(0, 0);
    } catch (error) {
      // Offline or the server is restarting: the form is intact and the retry is idempotent.
      buttons.forEach((button) => { button.disabled = false; });
      showProblem(String(error));
    }
  }

  // --- keyboard ---------------------------------------------------------------------------

  let focusBeforeHelp = null;

  function toggleHelp() {
    help.hidden = !help.hidden;
    if (!help.hidden) {
      focusBeforeHelp = document.activeElement;
      help.querySelector("button").focus();
    } else if (focusBeforeHelp && document.contains(focusBeforeHelp)) {
      focusBeforeHelp.focus();
    }
  }

  function focusFirst(selector) {
    form.querySelectorAll("details.extras").forEach((details) => { details.open = true; });
    const target = form.querySelector(selector);
    if (target) { target.focus(); target.scrollIntoView({ block: "center" }); }
  }

  function isTextField(element) {
    return element.tagName === "TEXTAREA" || (element.tagName === "INPUT" && ["text", "search", ""].includes(element.type))
      || element.tagName === "SELECT";
  }

  function rateInRow(target, key) {
    // In a rating row, 1-7 sets the score and moves to the next row.
    const row = target.closest(".rating-row");
    if (!row || !/^[1-7]$/.test(key)) return false;
    row.querySelector(`input[value="${key}"]`).checked = true;
    const rows = Array.from(form.querySelectorAll(".rating-row"));
    const next = rows[rows.indexOf(row) + 1];
    (next ? next.querySelector("input") : form.querySelector("#critique")).focus();
    return true;
  }

  const pairwiseKeys = {
    a: () => choose(form.querySelector("input[name=preference]").value),
    arrowleft: () => choose(form.querySelector("input[name=preference]").value),
    b: () => choose(form.querySelectorAll("input[name=preference]")[2].value),
    arrowright: () => choose(form.querySelectorAll("input[name=preference]")[2].value),
    t: () => choose("tie"),
    x: () => choose("all_bad"),
    1: () => form.querySelector("input[name=strength][value='1']").click(),
    2: () => form.querySelector("input[name=strength][value='2']").click(),
    3: () => form.querySelector("input[name=strength][value='3']").click(),
  };

  const commonKeys = {
    r: () => focusFirst(".rating-row input"),
    f: () => focusFirst(".flags input"),
    n: () => document.getElementById("critique").focus(),
    w: openRewrite,
    s: () => {
      const box = document.getElementById("skip-box");
      box.open = true;
      document.getElementById("skip-reason").focus();
    },
    enter: () => form.requestSubmit(),
  };

  document.addEventListener("keydown", (event) => {
    const key = event.key.toLowerCase();
    if (!help.hidden) {
      if (key === "escape" || key === "?") { event.preventDefault(); toggleHelp(); }
      return;
    }
    if (!form || event.altKey || event.isComposing) return;
    const target = event.target;
    if (isTextField(target)) {
      if (key === "escape") target.blur();
      else if (key === "enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    if (key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (rateInRow(target, key)) { event.preventDefault(); return; }
    if (key === "enter" && ["BUTTON", "SUMMARY", "A"].includes(target.tagName)) return;  // native
    let action = commonKeys[key];
    if (isPairwise()) action = pairwiseKeys[key] || action;
    else if (labels().includes(event.key.toUpperCase()) && key.length === 1) action = () => pick(event.key.toUpperCase());
    else if (key === "=") action = () => { tieNext = true; };
    else if (key === "backspace") action = undoPick;
    else if (key === "0") action = clearRanking;
    if (action) { event.preventDefault(); action(); }
  });

  help.querySelector("[data-action=close-help]").addEventListener("click", toggleHelp);
  // "?done=saved" told a plain form post what happened; a reload should not say it again.
  if (new URLSearchParams(window.location.search).has("done")) {
    window.history.replaceState(null, "", window.location.pathname);
  }
  init();
})();
