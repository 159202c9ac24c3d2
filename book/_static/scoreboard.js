// Filters of the scoreboard: show the claims of one family and/or one verdict. Loaded on every page
// (Sphinx has no per-page scripts), it does nothing where there is no scoreboard.
"use strict";

function applyScoreboardFilters(form, table) {
  const family = form.elements.family.value;
  const verdict = form.elements.verdict.value;
  const claimRows = table.querySelectorAll("tr.claim-row");
  const shownPerPaper = new Map();
  let shown = 0;
  claimRows.forEach((row) => {
    const visible = (!family || row.dataset.family === family) && (!verdict || row.dataset.verdict === verdict);
    row.classList.toggle("filtered-out", !visible);
    if (visible) {
      shown += 1;
      shownPerPaper.set(row.dataset.slug, true);
    }
  });
  // A paper's header row goes with its claims: hidden when none of them is shown.
  table.querySelectorAll("tr.paper-row").forEach((row) => {
    row.classList.toggle("filtered-out", !shownPerPaper.has(row.dataset.slug));
  });
  form.elements.shown.value = `${shown} of ${claimRows.length} claims`;
}

function setUpScoreboard() {
  const board = document.querySelector(".actlab-scoreboard");
  if (!board) {
    return;
  }
  const form = board.querySelector("form.actlab-filters");
  const table = board.querySelector("table.actlab-scoreboard-table");
  form.addEventListener("change", () => applyScoreboardFilters(form, table));
  form.addEventListener("submit", (event) => event.preventDefault());
  form.hidden = false;
  applyScoreboardFilters(form, table);
}

document.addEventListener("DOMContentLoaded", setUpScoreboard);
