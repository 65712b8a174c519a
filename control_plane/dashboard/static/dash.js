// cinefleet dashboard: the only script, and the pages work without it (a reload shows the same).
// 1. <time> elements are rendered in UTC by the server; show them in the viewer's own zone
//    (the UTC text stays in the title, on hover).
// 2. A page with [data-events] subscribes to /events (server-sent events): the fleet page updates its
//    [data-live] numbers in place; a run page reloads when its run changed.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.textContent = when.toLocaleString(); }
    });
  }
  function subscribe(el) {
    if (!window.EventSource) { return; }
    var source = new EventSource(el.getAttribute("data-events"));
    source.addEventListener("fleet", function (event) {
      var figures = JSON.parse(event.data);
      document.querySelectorAll("[data-live]").forEach(function (node) {
        var value = figures[node.getAttribute("data-live")];
        node.textContent = value === undefined ? "0" : value === null ? "-" : String(value);
      });
    });
    source.addEventListener("run", function (event) {
      var run = JSON.parse(event.data);
      if (run.version !== el.getAttribute("data-version")) { source.close(); window.location.reload(); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-events]").forEach(subscribe);
  });
})();
