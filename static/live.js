// Admin pages that show running work (the dashboard, the round list): while any of it runs,
// fetch the page again every few seconds and swap in the fresh copy of each region marked
// `data-live` (server-rendered HTML, escaped as on any page), so progress moves without a
// reload. Forms are never inside a region, so nothing the admin is typing is replaced.
"use strict";

(function () {
  const POLL_MS = 3000;
  const active = () => document.querySelector("[data-live=active]") !== null;

  async function refresh() {
    if (!document.hidden) {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok) {
          const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
          document.querySelectorAll("[data-live]").forEach((region) => {
            const copy = fresh.getElementById(region.id);
            if (copy) region.replaceWith(document.adoptNode(copy));
          });
        }
      } catch (error) {
        console.warn("page refresh failed", error);
      }
    }
    if (active()) window.setTimeout(refresh, POLL_MS);
  }

  if (active()) window.setTimeout(refresh, POLL_MS);
})();
