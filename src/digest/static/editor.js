// The live preview of the announcement form (summary, body) and of the month's issue form (intro):
// the Markdown as readers will see it, rendered and sanitized by the console itself (the same code
// as the feeds and the digest), fetched from this origin.
"use strict";
(function () {
  const form = document.querySelector("form.item-form, form.issue-form");
  if (!form) {
    return;
  }
  const url = form.dataset.preview;
  const token = form.querySelector("input[name=csrf_token]").value;
  for (const name of ["summary", "body", "intro"]) {
    const area = form.querySelector("textarea[name=" + name + "]");
    const out = document.getElementById(name + "-preview");
    if (!area || !out) {
      continue;
    }
    let timer = null;
    let asked = 0;
    const update = async function () {
      const mine = ++asked;
      const data = new FormData();
      data.append("csrf_token", token);
      data.append("markdown", area.value);
      const response = await fetch(url, { method: "POST", body: data, credentials: "same-origin" });
      if (response.ok && mine === asked) {
        // Sanitized by the server (nh3, as in every feed); the page's CSP runs no inline script.
        out.innerHTML = await response.text();
        out.dataset.ready = String(mine);
      }
    };
    area.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(update, 200);
    });
    update();
  }
  // The Event section: "All day" asks for days, "At a time" for days and times. Switching keeps
  // each day (a new time starts at 00:00, to be set); a value an input cannot hold (a time with
  // an offset) stays as text.
  const day = /^\d{4}-\d{2}-\d{2}$/;
  const local = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/;
  const moments = ["event_start", "event_end"]
    .map(function (name) { return form.querySelector("input[name=" + name + "]"); })
    .filter(Boolean);
  for (const radio of form.querySelectorAll("input[name=event_timing]")) {
    radio.addEventListener("change", function () {
      if (!radio.checked) {
        return;
      }
      const timed = radio.value === "timed";
      for (const input of moments) {
        const value = input.value.trim();
        const start = value.slice(0, 10);
        if (timed && (value === "" || local.test(value) || day.test(value))) {
          input.type = "datetime-local";
          input.value = day.test(value) ? value + "T00:00" : value;
        } else if (!timed && (value === "" || day.test(start))) {
          input.type = "date";
          input.value = start;
        }
      }
    });
  }
})();
