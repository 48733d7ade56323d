// niche dashboard: refreshes every [data-field] figure of the page in place from the JSON the
// page was built from (<body data-source data-refresh-s>). Plots are not redrawn live.
// The same formats as niche.reports.dashboard_html.FORMATS; a failed fetch only shows a
// quiet status, it throws nothing.
"use strict";
(function () {
  var FORMATS = {
    pct: function (v) { return (v * 100).toFixed(1) + "%"; },
    pts: function (v) { var s = (v * 100).toFixed(1); return (s.charAt(0) === "-" ? s : "+" + s) + " pts"; },
    acc: function (v) { return v.toFixed(3); },
    usd: function (v) { return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(4)); },
    int: function (v) { return String(v); },
    version: function (v) { return "v" + v; }
  };

  function show(value, format) {
    if (value === null || value === undefined) { return "\u2014"; }
    var f = FORMATS[format];
    return f ? f(value) : String(value);
  }

  function status(text) {
    var element = document.getElementById("refresh-status");
    if (element) { element.textContent = text; }
  }

  function apply(data) {
    var elements = document.querySelectorAll("[data-field]");
    for (var i = 0; i < elements.length; i++) {
      var element = elements[i];
      var row = element.closest("[data-task]");
      var source = row ? (data.tasks || {})[row.getAttribute("data-task")] : data.fields;
      var name = element.getAttribute("data-field");
      if (!source || !Object.prototype.hasOwnProperty.call(source, name)) { continue; }
      var value = source[name];
      element.setAttribute("data-value", value === null ? "" : String(value));
      element.textContent = show(value, element.getAttribute("data-format"));
    }
    var at = document.getElementById("refreshed-at");
    if (at && data.refreshed_at) { at.textContent = data.refreshed_at; }
    status("");
  }

  function refresh(source) {
    return fetch(source, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { status("figures not refreshed (HTTP " + response.status + ")"); return null; }
        return response.json();
      })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { status("figures not refreshed (the gateway cannot be reached)"); });
  }

  function start() {
    var body = document.body;
    var source = body.getAttribute("data-source");
    var seconds = parseFloat(body.getAttribute("data-refresh-s"));
    if (!source || !(seconds > 0) || !window.fetch) { return; }
    window.setInterval(function () { refresh(source); }, seconds * 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
